"""The embedded LanguageModel: a rule-based structurer that needs no LLM.

- Discard: short transcripts with no content (greetings, "Okay, thanks.") are discarded;
  anything over 100 words, or holding a question, a task, a plan or a fact, is kept.
- Title and overview are extractive: key phrases and the most central sentences by word
  frequency (``app.core.text``); no sentence is embedded.
- Category: "title. overview" is embedded (one call) and compared with a short description of
  each category (embedded once, lazily); unless one description is clearly the nearest (see
  ``CATEGORY_SURE``) the category is "other".
- Action items come from cue phrases ("I need to", "remind me to", "can you", ...) and
  imperative sentences ("Call the plumber ..."); events from date/time phrases resolved
  against ``started_at`` (``app.core.dates``). A deadline ("by Friday") stays on its action
  item and makes no event.
- Prompts cannot be answered: ``run_prompt`` returns ``None``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from app.core.dates import duration_minutes, find_when
from app.core.models import ActionItem, Category, Event, Structured, aware
from app.core.ports import Embedder
from app.core.text import (
    Scores,
    centrality,
    content_words,
    key_phrases,
    split_sentences,
    title_case,
    words,
)

__all__ = ["CATEGORY_DESCRIPTIONS", "CATEGORY_EMOJI", "RuleBasedLanguageModel", "worth_keeping"]


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# The emoji of each category ("other" is the contract's default).
CATEGORY_EMOJI: dict[Category, str] = {
    "personal": "🏠",
    "education": "📚",
    "health": "🩺",
    "finance": "💰",
    "legal": "⚖️",
    "philosophy": "🤔",
    "spiritual": "🙏",
    "science": "🔬",
    "entrepreneurship": "🚀",
    "parenting": "👶",
    "romantic": "❤️",
    "travel": "✈️",
    "inspiration": "💡",
    "technology": "💻",
    "business": "💼",
    "social": "🎉",
    "work": "🗂️",
    "sports": "⚽",
    "literature": "📖",
    "history": "📜",
    "politics": "🗳️",
    "architecture": "🏛️",
    "other": "🧠",
}
# What each category is about, embedded once to pick a transcript's category.
CATEGORY_DESCRIPTIONS: dict[Category, str] = {
    "personal": "Personal life at home: errands, chores, groceries, shopping, cooking, cleaning and repairs.",
    "education": "School and studying: a class, lecture, course, teacher, homework, essay, exam and grades.",
    "health": "Health: seeing a doctor or nurse about symptoms, pain, injury, blood pressure, medication.",
    "finance": "Money and personal finance: budget, bank, taxes, savings, investments, mortgage, bills.",
    "legal": "Legal matters: contracts, lawyers, court, lawsuits, rights and regulations.",
    "philosophy": "Philosophy: ethics, the meaning of life, consciousness, free will, morality.",
    "spiritual": "Spirituality and religion: faith, prayer, meditation, church, God, the soul.",
    "science": "Natural science: biology, chemistry, physics, astronomy, from cells and plants to stars.",
    "entrepreneurship": "Starting a company: founders, startups, fundraising, investors, a pitch.",
    "parenting": "Parenting: kids, babies, raising children, school pickup, bedtime, family care.",
    "romantic": "Romance: dating, love, a partner, girlfriend or boyfriend, anniversary, marriage.",
    "travel": "Travel: flights, airports, hotels, vacations, luggage, destinations, sightseeing.",
    "inspiration": "Inspiration and motivation: goals, dreams, success, creativity, self-improvement.",
    "technology": "Software engineering: programming, databases, servers, the cloud, upgrades, AI and apps.",
    "business": "Business: customers, sales, marketing, clients, deals, revenue and strategy.",
    "social": "Social life: friends, parties, hanging out, gossip, celebrations, small talk.",
    "work": "A work meeting: the team's standup, project tasks, code reviews, bugs, deadlines, slides.",
    "sports": "Sports: football, basketball, tennis, matches, scores, training and the gym.",
    "literature": "Books and literature: novels, poems, authors, reading and writing stories.",
    "history": "History: past events, wars, ancient civilisations, empires, historical figures.",
    "politics": "Politics: government, elections, voting, politicians, policy and debates.",
    "architecture": "Architecture: building design, construction, architects, urban planning.",
}
# A category is taken when its description is clearly the nearest: cosine similarity at least
# CATEGORY_SURE, or at least CATEGORY_MIN and CATEGORY_MARGIN above the runner-up; otherwise
# "other". Calibrated on 33 invented "title. overview" texts: on-topic ones score 0.17-0.59
# with a margin of 0.05-0.36; chit-chat ("Okay, thanks.", "Hmm, let me think about it.")
# scores up to 0.23 but never stands out by more than 0.03.
CATEGORY_SURE = 0.30
CATEGORY_MIN = 0.12
CATEGORY_MARGIN = 0.04

_CUE_RE = re.compile(
    r"\b(?:remind\s+me\s+to|(?:do\s+not|don't)\s+forget\s+to|make\s+sure"
    r"|(?:i|we|you)\s+(?:really\s+)?(?:need|have|got)\s+to|(?:i|we)\s+(?:will|must|should|plan\s+to)"
    r"|i'll|we'll|(?:i'm|i\s+am|we're|we\s+are)\s+going\s+to|(?:can|could|would|will)\s+you"
    r"|you\s+should|please|let's|let\s+us|has\s+to|have\s+to|need\s+to)\b",
    re.IGNORECASE,
)
_IMPERATIVE = _set(
    "add ask book bring buy call cancel check clean confirm contact drop email fill finish fix follow"
    " grab keep order pack pay pick prepare print read remember renew reply reserve return review"
    " schedule send share sign submit take text update visit wash water write"
)
_NOT_TASKS = _set("be say know think hear believe imagine admit guess wait see agree understand")
_LETS_NOT = _set("start begin get go move wrap see talk recap continue keep do try hope say look")
_LEAD_RE = re.compile(
    r"^(?:(?:yes|no|okay|ok|so|and|also|then|well|oh|right|now|please|just|hey|quickly|definitely"
    r"|really|actually|first|remind\s+me\s+to|(?:do\s+not|don't)\s+forget(?:\s+that|\s+to)?|make\s+sure\s+to"
    r"|(?:i|we|you)\s+(?:need|have|want|got|plan)\s+to|(?:i|we)\s+(?:will|should|can)|i'll|we'll"
    r"|(?:can|could|would|will)\s+you|let's|let\s+us|you\s+should|(?:i'm|we're)\s+going\s+to)\b[\s,]*)+",
    re.IGNORECASE,
)
_SUBJECT_END_RE = re.compile(
    r"\s(?:is|are|was|will\s+be|starts?|begins?|leaves?|departs?|arrives?|ends?|opens?|takes\s+place|lands?)\b",
    re.IGNORECASE,
)
_TRAILING_RE = re.compile(r"(?:[\s,;:]+(?:at|on|for|by|in|to|from|of|and|the|with|about|please))+$", re.I)
_FAREWELL_RE = re.compile(
    r"\b(?:thank\s+you|see\s+you(?:\s+later|\s+soon)?|talk\s+(?:to\s+you\s+)?later|how\s+are\s+you"
    r"|sounds\s+good|good\s+(?:morning|afternoon|evening|night)|have\s+a\s+(?:good|nice)\s+\w+"
    r"|you're\s+welcome|no\s+problem|i\s+(?:don't\s+)?know|i\s+mean|you\s+know)\b",
    re.IGNORECASE,
)
_QUESTION_START = _set(
    "who what when where why how which should can could would will do does did is are was were have"
)
_PLAN_RE = re.compile(
    r"\b(?:tomorrow|tonight|next\s+(?:week|month|year|\w+day)|(?:on|this)\s+\w+day|later|soon|will|'ll"
    r"|going\s+to|plan(?:ning)?\s+to|at\s+\d|at\s+(?:one|two|three|four|five|six|seven|eight|nine|ten"
    r"|eleven|twelve|noon)|this\s+weekend|schedule)\b",
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(
    r"\b(?:\d+|two|three|four|five|six|seven|eight|nine|ten|twenty|thirty|hundred|thousand|million)\b", re.I
)
_OVERVIEW_CHARS = 600
_CATEGORY_WORDS = 32
_WEAK_END = _set("the a an and or but of to at on for by in with about from so that if is are was")


@dataclass(slots=True)
class _Draft:
    title: str
    overview: str
    action_items: list[ActionItem] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class RuleBasedLanguageModel:
    """``LanguageModel`` that works offline: rules for the text, ``embedder`` for the category."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._categories: tuple[list[Category], npt.NDArray[np.float32]] | None = None

    async def should_discard(self, transcript: str) -> bool:
        return not worth_keeping(transcript)

    async def structure(self, transcript: str, started_at: datetime, language: str | None) -> Structured:
        """Structure ``transcript``; the rules are English whatever ``language`` says."""
        if not transcript.strip():
            return Structured()
        # The rules take a few ms on a long transcript (and dateparser loads its data on first
        # use): always off the event loop; the thread hop costs ~0.1 ms.
        draft = await asyncio.to_thread(draft_structure, transcript, aware(started_at))
        # One embedding; the first words carry the topic and keep the call short (~10 ms).
        category = await self._category(
            " ".join(f"{draft.title}. {draft.overview}".split()[:_CATEGORY_WORDS])
        )
        return Structured(
            title=draft.title,
            overview=draft.overview,
            emoji=CATEGORY_EMOJI[category],
            category=category,
            action_items=draft.action_items,
            events=draft.events,
        )

    async def run_prompt(self, prompt: str, transcript: str) -> str | None:
        return None

    async def _category(self, text: str) -> Category:
        names, matrix = await self._category_matrix()
        vector = (await self._embedder.embed([text]))[0]
        similarity = matrix @ vector
        order = np.argsort(-similarity)
        best, second = float(similarity[order[0]]), float(similarity[order[1]])
        if best >= CATEGORY_SURE or (best >= CATEGORY_MIN and best - second >= CATEGORY_MARGIN):
            return names[int(order[0])]
        return "other"

    async def _category_matrix(self) -> tuple[list[Category], npt.NDArray[np.float32]]:
        # No lock (it would tie the model to one event loop): two concurrent first calls both
        # embed the descriptions once, which is harmless.
        if self._categories is None:
            names = list(CATEGORY_DESCRIPTIONS)
            vectors = await self._embedder.embed([CATEGORY_DESCRIPTIONS[n] for n in names])
            self._categories = (names, vectors)
        return self._categories


def worth_keeping(transcript: str) -> bool:
    """The discard rule: ``False`` for short talk with nothing to remember."""
    if len(words(transcript)) > 100:
        return True
    text = _FAREWELL_RE.sub(" ", transcript.replace("’", "'"))
    content = _content(text)
    if len(content) >= 3:  # a statement with enough substance: "The coffee machine broke."
        return True
    for sentence in split_sentences(text) if content else []:
        tokens = words(sentence)
        if not _content(sentence):
            continue
        question = "?" in sentence or tokens[0].lower() in _QUESTION_START
        name = any(w[0].isupper() and w != "I" and not w.startswith("I'") for w in tokens[1:])
        if question or name or _NUMBER_RE.search(sentence) or _PLAN_RE.search(sentence) or _task_in(sentence):
            return True
    return False


def _content(text: str) -> list[str]:
    return [w for w in content_words(text) if w.lower() not in _TIME_WORDS]


_TIME_WORDS = _set(
    "today tomorrow tonight yesterday later soon now week month day time morning afternoon evening"
    " monday tuesday wednesday thursday friday saturday sunday weekend"
)


def draft_structure(transcript: str, started_at: datetime) -> _Draft:
    """Everything but the category, in pure Python (run off the event loop)."""
    sentences = split_sentences(transcript.replace("’", "'"))
    scores = centrality(sentences)
    return _Draft(
        title=_title(sentences, scores),
        overview=_overview(sentences, scores.sentences),
        action_items=_action_items(sentences),
        events=_events(sentences, started_at),
    )


def _overview(sentences: Sequence[str], scores: Sequence[float]) -> str:
    eligible = [i for i, score in enumerate(scores) if score > 0] or list(range(min(3, len(sentences))))
    chosen = sorted(eligible, key=lambda i: (-scores[i], i))[:3]
    while len(chosen) > 1 and sum(len(sentences[i]) + 1 for i in chosen) > _OVERVIEW_CHARS:
        chosen.pop()
    return " ".join(sentences[i] for i in sorted(chosen))


def _title(sentences: Sequence[str], scores: Scores) -> str:
    phrases = key_phrases(sentences, scores)
    if not phrases:
        fallback = " ".join(words(sentences[0])[:6]) if sentences else ""
        return title_case(fallback) or "Conversation"
    chosen = [phrases[0][0]]
    if len(chosen[0].split()) < 3:
        used = {w.lower() for w in chosen[0].split()}
        other = next((p for p, _ in phrases[1:] if not used & {w.lower() for w in p.split()}), None)
        if other is not None:
            chosen.append(other)
    return title_case(" and ".join(chosen))


def _action_items(sentences: Sequence[str]) -> list[ActionItem]:
    items: list[str] = []
    keys: list[str] = []
    for sentence in sentences:
        task = _task_in(sentence)
        if task is None:
            continue
        key = " ".join(w.lower() for w in words(task))
        if any(key in k for k in keys):
            continue
        for i in reversed(range(len(keys))):  # a longer phrasing replaces a shorter one
            if keys[i] in key:
                del keys[i], items[i]
        keys.append(key)
        items.append(task)
    return [ActionItem(description=item) for item in items[:20]]


def _task_in(sentence: str) -> str | None:
    """The task a sentence asks for, as a clean capitalised phrase, or ``None``."""
    cue = _CUE_RE.search(sentence)
    if cue is not None:
        keep = cue.group().lower().startswith("make")  # "Make sure we have a rollback plan"
        phrase = _clean_task(sentence[cue.start() if keep else cue.end() :])
        first = phrase.split(maxsplit=1)[0].lower() if phrase else ""
        lets = cue.group().lower().replace(" us", "'s") == "let's"
        if len(phrase.split()) >= 2 and first not in _NOT_TASKS and not (lets and first in _LETS_NOT):
            return phrase
    # "Call the plumber ...", or after a short opening: "For the exam, remember the difference ..."
    starts = [
        0,
        *(m.end() for m in re.finditer(r",\s+", sentence) if len(sentence[: m.start()].split()) <= 4),
    ]
    for start in starts[:3]:
        phrase = _clean_task(sentence[start:])
        tokens = phrase.split()
        if len(tokens) >= 2 and tokens[0].lower() in _IMPERATIVE and tokens[1].lower() not in _NOT_OBJECT:
            return phrase
    return None


_NOT_OBJECT = _set("is are was were has had will would can could of 's")


def _clean_task(text: str) -> str:
    text = _LEAD_RE.sub("", text.strip(" ,;:-"))
    text = _TRAILING_RE.sub("", text.rstrip(" .!?,;:")).strip(" ,")
    return text[:1].upper() + text[1:]


def _events(sentences: Sequence[str], started_at: datetime) -> list[Event]:
    events: list[Event] = []
    for sentence in sentences:
        when = find_when(sentence, started_at)
        if when is None or when.deadline:
            continue
        title = _event_title(sentence, when.spans)
        if any(e.title.lower() == title.lower() and e.start == when.start for e in events):
            continue
        duration = min(180, max(1, duration_minutes(sentence) or 30))
        events.append(Event(title=title, start=when.start, description=sentence, duration=duration))
    return events


def _event_title(sentence: str, spans: Sequence[tuple[int, int]]) -> str:
    """A short title: the task the sentence asks for, or the subject of "X is on Friday"."""
    text = sentence
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + " " + text[end:]
    text = re.sub(r"\s+", " ", text).strip(" .!?,;:")
    task = _task_in(text)
    if task is not None:
        text = task
    else:
        text = _LEAD_RE.sub("", text)
        subject = _SUBJECT_END_RE.search(text)
        if subject is not None:  # "the design review is ..." -> "Design review"
            part = re.split(
                r",\s*|\s(?:if|when|because|that|and|but|so|once|until)\s", text[: subject.start()]
            )[-1]
            part = re.sub(r"^(?:the|a|an|our|my|your|his|her|their)\s+", "", part.strip(), flags=re.I)
            text = part if content_words(part) else text
    text = _TRAILING_RE.sub("", text.strip(" .!?,;:")).strip(" ,")
    tokens = text.split()[:8]
    while tokens and tokens[-1].lower() in _WEAK_END:
        tokens.pop()
    title = " ".join(tokens)
    return title[:1].upper() + title[1:] if title else "Event"
