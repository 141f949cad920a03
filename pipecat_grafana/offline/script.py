"""What happens in an offline call: what the caller says, what the bot answers, and when.

The conversation (callers of a mobile operator and its voice bot), the bot's
system prompt, knowledge base and one tool, the incidents a call can have, and the
latencies of the caller and of every scripted provider. The services and the
transport act it out; kept apart from them, the numbers that shape a call's
metrics stand together, and the script changes without touching how Pipecat is
driven.
"""

import random
from dataclasses import dataclass

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema

# Scripted latencies, in seconds at speed 1.0, drawn uniformly from each range (draw_secs).
# They are of the order a hosted STT, LLM and TTS show, a little on the fast side.
THINK_SECS = (0.2, 0.4)  # the caller's pause before speaking
LEAD_IN_SECS = (0.1, 0.25)  # audio (silence) before the caller's speech
STT_FINALIZE_SECS = (0.08, 0.18)  # speech end (VAD stop) to final transcript
SMART_TURN_SECS = (0.008, 0.03)  # one end-of-turn model inference
LLM_TTFB_SECS = (0.2, 0.4)  # request to first streamed chunk
LLM_FIRST_TOKEN_SECS = (0.005, 0.03)  # first chunk to first answer token
LLM_TOKEN_SECS = (0.006, 0.015)  # between streamed tokens
TTS_TTFB_SECS = (0.06, 0.14)  # request to first audio
TTS_LEADING_SILENCE_SECS = (0.02, 0.15)  # silence the TTS pads its audio with

# Incidents, in seconds at speed 1.0 like the latencies above.
TOOL_SECS = (0.15, 0.4)  # the account backend behind the bot's tool
BARGE_IN_AFTER_SECS = (0.5, 1.0)  # the bot's speech (audio time) before the caller talks over it
RETRY_AFTER_SECS = (0.2, 0.4)  # the TTS provider's Retry-After when it refuses a request

# How fast the caller speaks: how long its audio lasts, and how much of it the STT has heard.
USER_WORDS_PER_SEC = 3.0

TOOL_NAME = "lookup_account"
"""The bot's one tool, which the LLM calls on one turn of every call with incidents."""
TOOL = FunctionSchema(
    name=TOOL_NAME,
    description="Look up the caller's account: plan, balance, next bill and line status.",
    properties={"question": {"type": "string", "description": "What the caller wants to know."}},
    required=["question"],
)
# What the account backend answers; the bot's scripted answer is worded from it.
ACCOUNT = {
    "account": "NW-20417",
    "plan": "Unlimited talk and text, 10 GB",
    "balance_usd": 12.40,
    "next_bill_due": "the 5th",
    "line_status": "active",
}

GREETING = "Hi, this is Ava from Northwind Mobile. How can I help you today?"
"""What the bot says when the caller connects, before the caller's first words."""

SYSTEM_PROMPT = (
    "You are Ava, the voice assistant of Northwind Mobile. Answer in one to three short "
    "spoken sentences, without lists, markdown or emojis. Use only the knowledge base "
    "below; if the answer is not there, offer to transfer the caller to an agent."
)


@dataclass(frozen=True)
class Exchange:
    """One turn of the script: what the caller says and what the bot answers."""

    user: str
    bot: str


# What callers ask a mobile operator's voice bot, and what it answers. A call
# uses a sample of these, in an order set by its seed.
EXCHANGES = (
    Exchange(
        "Hi, I'd like to check the balance on my account.",
        "Sure, I can help with that. Your current balance is twelve dollars and forty "
        "cents. Your next bill is due on the fifth.",
    ),
    Exchange(
        "Why is my bill higher than usual this month?",
        "Your bill includes a one-time roaming charge from your trip last week. "
        "Without it, you would have paid the usual thirty-five dollars.",
    ),
    Exchange(
        "Can I add more data to my plan?",
        "Yes. A five gigabyte add-on costs ten dollars and lasts until your next bill. "
        "Would you like me to add it now?",
    ),
    Exchange(
        "Yes please, add it.",
        "Done. The five gigabytes are on your line and ready to use. You'll get a text "
        "confirming it in a minute.",
    ),
    Exchange(
        "Does my plan work in Canada?",
        "It does. Calls and texts in Canada are included, and data costs five dollars a "
        "day, charged only on days you use it.",
    ),
    Exchange(
        "My phone has no signal at home since yesterday.",
        "I'm sorry about that. There is maintenance on a tower near you until tonight. "
        "Wi-Fi calling will keep you connected in the meantime.",
    ),
    Exchange(
        "How do I turn on Wi-Fi calling?",
        "Open your phone settings, then mobile network, then Wi-Fi calling, and switch "
        "it on. It works right away, at no extra cost.",
    ),
    Exchange(
        "I want to change the due date of my bill.",
        "You can move it to any day between the first and the twenty-eighth. Which day "
        "suits you best?",
    ),
    Exchange(
        "The fifteenth would be better.",
        "All right, your bill will be due on the fifteenth from next month on. There is "
        "no charge for the change.",
    ),
    Exchange(
        "Can I keep my number if I switch to a family plan?",
        "Yes, every line keeps its number. A family plan for three lines costs ninety "
        "dollars a month, with unlimited calls and texts.",
    ),
    Exchange(
        "Is there a fee to cancel my contract?",
        "Your contract ended in March, so there is no cancellation fee. Before you go, "
        "may I tell you about our loyalty discount?",
    ),
    Exchange(
        "That's all, thank you.",
        "You're welcome. Thanks for calling Northwind Mobile, and have a great day.",
    ),
)

KNOWLEDGE_BASE = "\n".join(f"- {exchange.bot}" for exchange in EXCHANGES)


def pick_exchanges(turns: int, rng: random.Random) -> list[Exchange]:
    """Draw a call's exchanges from the bank, repeating it if the call is longer."""
    exchanges: list[Exchange] = []
    while len(exchanges) < turns:
        exchanges.extend(rng.sample(EXCHANGES, min(len(EXCHANGES), turns - len(exchanges))))
    return exchanges


@dataclass(frozen=True)
class Incidents:
    """What happens in a call besides questions and answers. Turns count from 0."""

    tool_call_turn: int | None = None
    """The turn the LLM answers by calling the tool first, then from its result."""
    barge_in_turn: int | None = None
    """The turn whose question the caller asks while the bot still answers the one before
    (a call of one turn has none)."""
    rate_limited_answer: int | None = None
    """The answer whose first TTS request the provider refuses with 429 Too Many Requests."""


def plan_incidents(turns: int, rng: random.Random) -> Incidents:
    """Draw which turns a call's incidents happen on: one of each."""
    return Incidents(
        tool_call_turn=rng.randrange(turns),
        barge_in_turn=rng.randrange(1, turns) if turns > 1 else None,
        rate_limited_answer=rng.randrange(turns),
    )


def draw_secs(rng: random.Random, bounds: tuple[float, float], speed: float) -> float:
    """A scripted latency: a draw from ``bounds`` (seconds at speed 1.0), scaled by ``speed``."""
    return rng.uniform(*bounds) * speed
