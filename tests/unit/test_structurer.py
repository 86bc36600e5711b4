"""The rule-based LanguageModel on the corpus transcripts and on invented ones."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from app.backends.minilm_embedder import MiniLMEmbedder
from app.core.models import CATEGORIES, Structured
from app.core.ports import LanguageModel
from app.core.structurer import (
    CATEGORY_DESCRIPTIONS,
    CATEGORY_EMOJI,
    RuleBasedLanguageModel,
    worth_keeping,
)
from app.core.text import split_sentences

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "audio" / "corpus.json"
MONDAY = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

# A five-minute meeting, about 750 words.
MEETING = (
    "Okay, let's get started with the weekly product meeting. Thanks everyone for joining on time. The "
    "first topic is the mobile release. Priya, can you give us a quick update on where the iOS build "
    "stands? Sure. The build passed all the automated tests last night, but we still have three crashes "
    "on older iPhones that show up when the app resumes from the background. I think the problem is in "
    "the audio session handling, because it only happens when a recording was interrupted. I need to "
    "reproduce it on a real device before I can say for certain. How long do you think that will take? "
    "Probably two days if the test devices arrive tomorrow morning. Okay, that works. Daniel, what about "
    "Android? Android is in better shape. We fixed the battery drain issue that customers complained "
    "about in the reviews, and the new version uses about forty percent less power during long "
    "conversations. We still want to run the overnight soak test before we ship it. Great news. Please "
    "send me the battery numbers so I can put them in the release notes. Sure, I will send the battery "
    "report to you by Thursday. Next topic is the backend migration. Right now the memories service still "
    "runs on the old cluster, and the database is almost full. Marco proposed that we move to the managed "
    "database in the new region. Marco, do you want to explain the plan? Yes. The idea is to copy the "
    "data in the background, keep both databases in sync for a week, and then switch the traffic over on "
    "a quiet night. The risky part is the search index, because rebuilding it takes about six hours. We "
    "should schedule the switch for the weekend, when usage is lowest. What do we need from the other "
    "teams? We need the security team to review the network rules, and we need finance to approve the "
    "extra cost for the overlap week. I can talk to finance. Don't forget to include the cost estimate in "
    "the request, they always ask for it. Good point. Let's also make sure we have a rollback plan "
    "written down before anything moves. Agreed. The migration dry run is next Wednesday at ten in the "
    "morning, and everyone on the backend team should join. Then there is the customer feedback. Sofia, "
    "you went through the survey results? Yes, we had about two hundred responses. The main themes were "
    "that people love the automatic summaries, but they find the search confusing, and many of them want "
    "to export their memories to other note apps. A few people also asked for better support for "
    "languages other than English, especially Spanish and German. Export came up in almost a third of the "
    "answers, so I think it should be the next big feature. That matches what the sales team hears from "
    "business customers too. Can you write a short proposal for the export feature with the most "
    "requested formats? Yes, I can have a draft ready on Monday. Perfect. For search, I think we need a "
    "proper design review instead of small fixes. The design review for search is on Friday at two in the "
    "afternoon. Please bring examples of confusing results so we can look at real cases. One more thing "
    "about hiring. We have two open positions, a backend engineer and a designer. The interviews for the "
    "designer role are this week, and I would like each of you to read the portfolio before the "
    "interview. Remind me to send the interview schedule to the panel after this meeting. Also, the team "
    "offsite is confirmed for the fifteenth of next month in Porto. Travel is booked through the company "
    "portal, so please register before the end of the month. Anything else before we wrap up? Just a "
    "reminder that the quarterly planning document is due next week. Everyone should add their goals and "
    "the main risks for their area. I will review the whole document on Thursday evening and leave "
    "comments. Okay, sounds good. Thanks everyone, see you next week. Before everyone leaves, a quick "
    "note on support. The support queue grew last month because of the login problems after the password "
    "change. Most of the tickets are closed now, but a few customers are still waiting for answers. Can "
    "you check the oldest tickets today and reply to anyone who has waited more than three days? Okay, I "
    "will do that this afternoon."
)


class CountingEmbedder:
    """The real embedder, counting calls."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        return await self.inner.embed(texts)


@pytest.fixture(scope="module")
def corpus() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CORPUS.read_text())
    return data


@pytest.fixture(scope="module")
def embedder() -> Iterator[MiniLMEmbedder]:
    model = MiniLMEmbedder()
    yield model
    model.close()


@pytest.fixture
def counting(embedder: MiniLMEmbedder) -> CountingEmbedder:
    return CountingEmbedder(embedder)


@pytest.fixture
def model(counting: CountingEmbedder) -> RuleBasedLanguageModel:
    return RuleBasedLanguageModel(counting)


async def structure(model: RuleBasedLanguageModel, text: str, started_at: datetime = MONDAY) -> Structured:
    return await model.structure(text, started_at, "en")


def test_satisfies_the_port(model: RuleBasedLanguageModel) -> None:
    assert isinstance(model, LanguageModel)


def test_every_category_has_an_emoji_and_a_description() -> None:
    assert set(CATEGORY_EMOJI) == set(CATEGORIES)
    assert set(CATEGORY_DESCRIPTIONS) == set(CATEGORIES) - {"other"}
    assert CATEGORY_EMOJI["other"] == "🧠"


# --- discard -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_discards_only_the_short_corpus_clip(
    model: RuleBasedLanguageModel, corpus: dict[str, Any]
) -> None:
    decisions = {name: await model.should_discard(clip["text"]) for name, clip in corpus.items()}
    assert decisions.pop("short") is True
    assert decisions and not any(decisions.values()), decisions


@pytest.mark.anyio
@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Okay, thanks.",
        "um yeah",
        "hello hello",
        "Yeah. Okay. Bye!",
        "Thank you so much, see you later.",
        "Hi, how are you? Good, thanks.",
        "Uh huh. Right. Sure.",
        "See you tomorrow.",
        "Sounds good to me.",
    ],
)
async def test_discards_talk_without_content(model: RuleBasedLanguageModel, text: str) -> None:
    assert await model.should_discard(text)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "text",
    [
        "Call mom.",
        "What time does the pharmacy close?",
        "I met Sarah at the station.",
        "The rent is 950 euros.",
        "Meeting tomorrow at 3 pm.",
        "We're going to repaint the fence.",
        "The coffee machine is broken again.",
        "Remind me to water the plants.",
    ],
)
async def test_keeps_questions_tasks_plans_and_facts(model: RuleBasedLanguageModel, text: str) -> None:
    assert not await model.should_discard(text)


def test_more_than_100_words_is_never_discarded() -> None:
    assert not worth_keeping("um yeah okay " * 30)
    assert worth_keeping("um yeah okay " * 34)  # 102 words


# --- the corpus ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_standup(model: RuleBasedLanguageModel, corpus: dict[str, Any]) -> None:
    result = await structure(model, corpus["standup"]["text"])
    actions = [a.description for a in result.action_items]
    assert any("send the slides to the team by friday" in a.lower() for a in actions), actions
    assert "Review the pull request from Maria and update the release notes" in actions
    assert not any("standup" in a.lower() for a in actions)  # "Let's start the standup" is no task
    review = [e for e in result.events if "design review" in e.title.lower()]
    assert len(review) == 1, result.events
    assert review[0].start == datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    assert review[0].duration == 30
    assert "next Tuesday" in review[0].description
    assert not any("slides" in e.description for e in result.events)  # "by Friday" is a deadline
    assert result.category in {"work", "business"}
    assert result.emoji == CATEGORY_EMOJI[result.category]


@pytest.mark.anyio
async def test_doctor(model: RuleBasedLanguageModel, corpus: dict[str, Any]) -> None:
    result = await structure(model, corpus["doctor"]["text"])
    assert result.category == "health"
    assert [e.start for e in result.events] == [datetime(2026, 12, 15, 9, 0, tzinfo=UTC)]
    actions = [a.description.lower() for a in result.action_items]
    assert any(a.startswith("book a follow up visit") for a in actions), actions


@pytest.mark.anyio
async def test_grocery(model: RuleBasedLanguageModel, corpus: dict[str, Any]) -> None:
    result = await structure(model, corpus["grocery"]["text"])
    actions = [a.description for a in result.action_items]
    assert "Buy milk, eggs and coffee on the way home" in actions
    assert any(a.startswith("Call the plumber") for a in actions)
    assert [e.start for e in result.events] == [datetime(2026, 11, 24, 9, 0, tzinfo=UTC)]
    assert "plumber" in result.events[0].title.lower()


@pytest.mark.anyio
async def test_lecture(model: RuleBasedLanguageModel, corpus: dict[str, Any]) -> None:
    result = await structure(model, corpus["lecture"]["text"])
    assert result.category in {"education", "science"}
    assert result.events == []


@pytest.mark.anyio
async def test_travel(model: RuleBasedLanguageModel, corpus: dict[str, Any]) -> None:
    result = await structure(model, corpus["travel"]["text"])
    assert result.category == "travel"
    flights = [e for e in result.events if e.start == datetime(2026, 11, 28, 7, 0, tzinfo=UTC)]
    assert [e.title for e in flights] == ["Flight to Lisbon"]
    dinner = [e for e in result.events if e.start == datetime(2026, 11, 29, 19, 0, tzinfo=UTC)]
    assert dinner and "table" in dinner[0].title.lower()
    actions = [a.description for a in result.action_items]
    assert "Reserve a table at the seafood restaurant for Sunday evening" in actions


@pytest.mark.anyio
async def test_titles_and_overviews(model: RuleBasedLanguageModel, corpus: dict[str, Any]) -> None:
    for name, clip in corpus.items():
        text = clip["text"]
        result = await structure(model, text)
        assert result.title, name
        assert len(result.title.split()) <= 8, result.title
        assert result.title[0].isupper(), result.title
        assert result.overview, name
        assert result.overview in text or all(s in text for s in re.split(r"(?<=[.?!]) ", result.overview))
        sentences = re.split(r"(?<=[.?!]) ", result.overview)
        assert 1 <= len(sentences) <= 3
        assert sentences == sorted(sentences, key=text.index), "overview sentences keep their order"


@pytest.mark.anyio
async def test_events_keep_the_timezone(model: RuleBasedLanguageModel, corpus: dict[str, Any]) -> None:
    plus_two = timezone(timedelta(hours=2))
    result = await structure(model, corpus["standup"]["text"], datetime(2026, 11, 23, 9, 0, tzinfo=plus_two))
    (review,) = [e for e in result.events if "design review" in e.title.lower()]
    assert review.start == datetime(2026, 12, 1, 15, 0, tzinfo=plus_two)
    assert review.start.utcoffset() == timedelta(hours=2)


# --- behaviour -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_empty_transcript_gives_the_defaults(
    model: RuleBasedLanguageModel, counting: CountingEmbedder
) -> None:
    assert await structure(model, "  ") == Structured()
    assert counting.calls == 0


@pytest.mark.anyio
@pytest.mark.parametrize("text", ["um yeah", "Hmm, let me think about it.", "Hello hello.", "Okay, thanks."])
async def test_chit_chat_gets_a_title_and_no_category(model: RuleBasedLanguageModel, text: str) -> None:
    result = await structure(model, text)
    assert result.title
    assert result.category == "other"
    assert result.emoji == "🧠"


@pytest.mark.anyio
async def test_a_clear_topic_with_a_low_score_still_gets_its_category(model: RuleBasedLanguageModel) -> None:
    text = (
        "I have to pay the electricity bill before the end of the month. Also my credit card statement "
        "looks wrong, there are two charges from the same shop."
    )
    assert (await structure(model, text)).category == "finance"


def test_sentences_split_at_ends_but_not_at_abbreviations() -> None:
    text = "Dr. Smith said hi. We meet at 3 p.m. Then we go. Is it e.g. fine? Yes!"
    assert split_sentences(text) == [
        "Dr. Smith said hi.",
        "We meet at 3 p.m.",
        "Then we go.",
        "Is it e.g. fine?",
        "Yes!",
    ]


def test_unpunctuated_speech_is_cut_into_chunks() -> None:
    pieces = split_sentences(" ".join(["word"] * 100))
    assert [len(p.split()) for p in pieces] == [30, 30, 40]


@pytest.mark.anyio
async def test_action_items_are_not_duplicated(model: RuleBasedLanguageModel) -> None:
    text = "Remind me to call Bob about the invoice. Please call Bob about the invoice. I need to call Bob."
    result = await structure(model, text)
    descriptions = [a.description for a in result.action_items]
    assert descriptions == ["Call Bob about the invoice"]
    assert all(not a.completed for a in result.action_items)


@pytest.mark.anyio
async def test_event_duration_is_read_and_clamped(model: RuleBasedLanguageModel) -> None:
    result = await structure(
        model, "The workshop is on Friday at 10 am for two hours. The retreat is on Saturday for 9 hours."
    )
    assert [e.duration for e in result.events] == [120, 180]


@pytest.mark.anyio
async def test_run_prompt_is_not_supported(model: RuleBasedLanguageModel) -> None:
    assert await model.run_prompt("Summarise this.", "Some transcript.") is None


@pytest.mark.anyio
async def test_five_minute_meeting(model: RuleBasedLanguageModel, counting: CountingEmbedder) -> None:
    assert 700 <= len(MEETING.split()) <= 800
    await structure(model, "Warm up the category vectors.")
    counting.calls = 0
    result = await structure(model, MEETING)
    assert counting.calls == 1, "one embedding call per structure()"
    assert result.category in {"work", "business", "technology"}
    assert 1 <= len(result.title.split()) <= 8
    actions = [a.description for a in result.action_items]
    assert "Send the interview schedule to the panel after this meeting" in actions
    assert "Write a short proposal for the export feature with the most requested formats" in actions
    assert len(set(actions)) == len(actions)
    starts = {e.title: e.start for e in result.events}
    assert starts["Migration dry run"] == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert starts["Design review for search"] == datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    assert starts["Team offsite"] == datetime(2026, 12, 15, 9, 0, tzinfo=UTC)
