"""Plain-text helpers for the rule-based structurer: sentences, words, stopwords, scoring.

Pure Python and English-only. Nothing here is expensive: a 5-minute transcript (~750 words)
is split, tokenised and scored in a few milliseconds.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "FILLER",
    "GENERIC",
    "STOPWORDS",
    "VERBS",
    "Scores",
    "centrality",
    "content_words",
    "key_phrases",
    "split_sentences",
    "stem",
    "title_case",
    "words",
]


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS = _set(
    """
    a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't
    doing don't down during each either few for from further had hadn't has hasn't have haven't
    having he he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll
    i'm i've if in into is isn't it it's its itself just let let's me more most much must my
    myself no nor not of off on once only or other ought our ours ourselves out over own same
    shall she she'd she'll she's should shouldn't so some such than that that's the their theirs
    them themselves then there there's these they they'd they'll they're they've this those
    through to too under until up upon us very was wasn't we we'd we'll we're we've were weren't
    what what's when when's where where's whether which while who who's whom why why's will with
    won't would wouldn't you you'd you'll you're you've your yours yourself yourselves also
    although though however yet still even ever every everyone everybody everything anyone
    anything someone something nothing one ones may might shall via per within without instead
    """
)

# Conversation glue that carries no content on its own.
FILLER = _set(
    """
    okay ok okey yeah yea yep yup yes no nope uh um umm uhm hmm hm mm mhm ah oh eh er erm huh
    hello hi hey bye goodbye thanks thank thx cheers please sorry pardon right alright sure cool
    great good nice fine well like so anyway actually basically literally really totally
    definitely wow awesome perfect excellent lovely gonna wanna gotta kinda sorta yeah yeah
    morning afternoon evening night everyone guys folks
    """
)

# Frequent verbs, adverbs and time words: content for a listener, useless in a title.
GENERIC = _set(
    """
    get got getting go going goes went gone come came coming make made making take took taking
    keep kept do doing done did say said saying tell told know knew think thought mean meant
    want wanted need needed see saw seen look looking feel feeling felt try tried use used give
    gave put let start started finish finished thing things stuff lot lots way kind sort bit
    today tomorrow yesterday tonight now later soon next last week weeks month months year years
    day days time times monday tuesday wednesday thursday friday saturday sunday am pm o'clock
    feeling doing working thinking saying trying looking talking
    back again always never maybe probably twice once first second third new old big small
    little much many more less better best worse worst sure able remember forget forgot call
    called two three four five six seven eight nine ten twenty hundred thousand half
    proper real quick short main whole extra other good great long certain quiet late early same
    different important possible several own full empty high low
    looks seems seem sounds sound thinks think says goes gets makes takes wants needs knows won lost
    eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen thirty forty fifty
    sixty seventy eighty ninety percent
    """
)

# Verbs that double as nouns: inside a title phrase only after "the", "a", "my" ... ("the
# review") or inside a compound ("design review"); at the start of a run they are verbs.
_VERB_BASES = _set(
    """
    add ask book bring buy call cancel check clean climb confirm contact drop email fill fix follow remind
    grab help hurt leave meet move open order pack pay pick plan play prepare print read renew
    reply reserve return review run schedule send share show sign stop submit talk text turn update
    visit walk wash water work write happen arrive depart begin end close
    """
)
VERBS = frozenset(
    form for v in _VERB_BASES for form in (v, v + "s", v + "es", v + "ed", v + "d", v[:-1] + "ied")
)
_LEADERS = _set(
    """
    the a an my our your his her their its this that these those some any two three four five six
    seven eight nine ten several few many of in on at for from with about into after before
    between during by
    """
)

_NOT_CONTENT = STOPWORDS | FILLER | GENERIC
_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_BREAK_RE = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|\n+")
_ABBREVIATIONS = _set("mr mrs ms dr prof st sr jr vs etc e.g i.e a.m p.m approx dept inc ltd co no fig")
_LONG_SENTENCE = 45
_CHUNK = 30
_SMALL = _set("a an and as at but by for from in into nor of on or the to via with vs")


def words(text: str) -> list[str]:
    """The words of ``text`` in their original case (apostrophes kept: ``don't``)."""
    return [w.replace("’", "'") for w in _WORD_RE.findall(text)]


@functools.lru_cache(maxsize=8192)
def stem(word: str) -> str:
    """A light, lowercase stem so that ``bugs``/``bug`` and ``notes``/``note`` count together."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("sses", "xes", "ches", "shes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def content_words(text: str, *, generic: bool = True) -> list[str]:
    """Words that are neither stopwords nor filler (nor, with ``generic=False``, generic)."""
    out = []
    for word in words(text):
        low = word.lower()
        if low in STOPWORDS or low in FILLER or (low.isdigit() and len(low) < 2):
            continue
        if not generic and low in GENERIC:
            continue
        out.append(word)
    return out


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``; over-long unpunctuated stretches are cut at clause boundaries."""
    sentences: list[str] = []
    start = 0
    for match in _BREAK_RE.finditer(text):
        before = text[start : match.start()].rsplit(None, 1)
        last = before[-1].lower().rstrip(".") if before else ""
        following = text[match.end() : match.end() + 1]
        if match.group().strip().startswith(".") and last in _ABBREVIATIONS and not following.isupper():
            continue
        if last in {"dr", "mr", "mrs", "ms", "prof", "st"}:
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    out: list[str] = []
    for sentence in filter(None, sentences):
        out.extend(_cut_long(sentence))
    return out


def _cut_long(sentence: str) -> list[str]:
    if len(sentence.split()) <= _LONG_SENTENCE:
        return [sentence]
    pieces: list[str] = []
    current: list[str] = []
    for part in re.split(r"(?<=[,;:])\s+", sentence):
        tokens = part.split()
        if current and len(current) + len(tokens) > _CHUNK:
            pieces.append(" ".join(current))
            current = []
        current.extend(tokens)
        while len(current) > _LONG_SENTENCE:  # no commas either: plain chunks of words
            pieces.append(" ".join(current[:_CHUNK]))
            current = current[_CHUNK:]
    if current:
        pieces.append(" ".join(current))
    return pieces


@dataclass(frozen=True, slots=True)
class Scores:
    """Per-sentence centrality and, per stem, the number of sentences that hold it."""

    sentences: list[float]
    frequency: Counter[str]


def centrality(sentences: Sequence[str]) -> Scores:
    """How representative each sentence is: how often its content words recur elsewhere.

    A sentence scores the summed frequency (across sentences) of its distinct stems, divided
    by the square root of how many it has, so long sentences do not win by length alone.
    Sentences with fewer than three content words ("Great.", "Good morning everyone.") score 0.
    """
    stems = [{stem(w) for w in content_words(s, generic=False)} for s in sentences]
    frequency: Counter[str] = Counter()
    for group in stems:
        frequency.update(group)
    scores = [
        sum(frequency[w] for w in group) / math.sqrt(len(group)) if len(group) >= 3 else 0.0
        for group in stems
    ]
    return Scores(scores, frequency)


def key_phrases(sentences: Sequence[str], scores: Scores) -> list[tuple[str, float]]:
    """Candidate title phrases, best first: noun-like runs of content words.

    A word scores its frequency in the transcript, doubled when it is capitalised mid-sentence
    (a name). A phrase scores the sum of its words, plus half a point when it has several
    words, plus one when a determiner or preposition leads it ("the login page"), plus the
    centrality of its sentence relative to the best one; at equal scores the earlier wins.
    """
    top = max(scores.sentences, default=0.0) or 1.0
    seen: dict[str, tuple[str, float]] = {}
    for index, sentence in enumerate(sentences):
        weight = scores.sentences[index] / top - index * 1e-3
        for phrase, led in _runs(sentence):
            stems = [stem(w) for w in phrase]
            score = sum(
                scores.frequency[s] * (2.0 if w[0].isupper() and w != "I" else 1.0)
                for w, s in zip(phrase, stems, strict=True)
            )
            score += 0.5 * (len(phrase) > 1) + 1.0 * led + weight
            key = " ".join(stems)
            if key not in seen or seen[key][1] < score:
                seen[key] = (" ".join(phrase), score)
    return sorted(seen.values(), key=lambda item: -item[1])


def _runs(sentence: str) -> Iterable[tuple[list[str], bool]]:
    """Runs of content words (at most four) and whether a determiner/preposition leads each."""
    tokens = re.findall(r"[^\W_]+(?:['’][^\W_]+)*|[^\w\s]", sentence)
    run: list[str] = []
    led = False
    previous = ""
    for position, token in enumerate(tokens):
        low = token.lower()
        following = tokens[position + 1] if position + 1 < len(tokens) else ""
        content = token[0].isalnum() and not low.isdigit() and low not in _NOT_CONTENT
        if content and len(run) > 2 and run[-2] in _LINKS and run[-1][0].isupper() and token.islower():
            yield run[:4], led  # "flight to Lisbon" | "leaves"
            run = []
        verb = low in VERBS and ((not run and previous not in _LEADERS) or (run and run[-1][-1:] == "s"))
        if content and not verb:
            if not run:
                led = previous in _LEADERS or (position == 0 and following.lower() in _BE)
            run.append(token)
        elif run and low in _LINKS and following[:1].isupper() and following != "I":
            run.append(low)  # "flight to Lisbon", "Bank of England"
        elif run and low == "up" and run[-1].lower() in _PHRASAL:
            run.append(low)  # "follow up visit"
        else:
            if run and run[-1] not in _OPEN_ENDS:
                yield run[:4], led
            run = []
        previous = low
    if run and run[-1] not in _OPEN_ENDS:
        yield run[:4], led


_LINKS = frozenset({"to", "of"})
_OPEN_ENDS = frozenset({"to", "of", "up"})
_PHRASAL = frozenset({"follow", "check", "pick", "set", "sign", "catch", "warm"})
_BE = frozenset({"is", "are", "was", "were"})


def title_case(phrase: str) -> str:
    """``phrase`` in title case, small words lowercase except the first, names kept."""
    out = []
    for i, word in enumerate(phrase.split()):
        if i and word.lower() in _SMALL:
            out.append(word.lower())
        elif word[:1].islower():
            out.append(word[:1].upper() + word[1:])
        else:
            out.append(word)
    return " ".join(out)
