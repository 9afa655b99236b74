"""Four short hand-written biographies for conversation tests (shared by the LangChain and LlamaIndex suites).

Chosen so that the follow-up "Who was her father?" alone retrieves the *Marie Curie* document first
(it says "her father" twice), while the conversation it follows is about Ada Lovelace: only a
conversation-aware retrieval query finds the Lovelace document for it.
"""

from __future__ import annotations

BIOGRAPHIES: dict[str, str] = {
    "ada_lovelace": (
        "Ada Lovelace was an English mathematician and writer. She was born Augusta Ada Byron in London on "
        "10 December 1815. Her father was the poet Lord Byron, who left England a few months later. "
        "Lovelace was raised by Anne Isabella Milbanke, who encouraged the study of mathematics. Lovelace is "
        "known for the notes on the Analytical Engine, which include the first published algorithm intended "
        "for a machine. She died in London in 1852."
    ),
    "charles_babbage": (
        "Charles Babbage was an English mathematician, philosopher and mechanical engineer. He was born in "
        "London on 26 December 1791. His father, Benjamin Babbage, was a banker and a partner of a London bank. "
        "Babbage designed the Difference Engine and later the Analytical Engine, a general-purpose mechanical "
        "computer. He died in London in 1871."
    ),
    "nikola_tesla": (
        "Nikola Tesla was a Serbian-American inventor and electrical engineer. He was born on 10 July 1856 in "
        "the village of Smiljan, in the Austrian Empire. His father, Milutin Tesla, was an Eastern Orthodox "
        "priest, and his mother, Đuka Mandić, made tools for the household. Tesla is best known for his work "
        "on the alternating current electricity supply system. He died in New York City in 1943."
    ),
    "marie_curie": (
        "Marie Curie was a physicist and chemist who did pioneering research on radioactivity. She was born "
        "Maria Skłodowska in Warsaw on 7 November 1867. Her father, Władysław Skłodowski, was a teacher of "
        "mathematics and physics; her father lost his post and her family struggled. Her mother ran a boarding "
        "school. She was the first woman to win a Nobel Prize, and she died in France in 1934."
    ),
}

FIRST = "Where was Ada Lovelace born?"
FOLLOW_UP = "Who was her father?"
SUBJECT = "ada_lovelace"
DISTRACTOR = "marie_curie"  # what the follow-up alone retrieves first
OFF_TOPIC = "What is the boiling point of mercury in kelvin?"
