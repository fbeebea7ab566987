"""What every worker gets, and the ask-validate-reask loop that classify and extract share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import InvalidAnswer
from ..llm import Meter, parse_json_object

# Enough for the fields we extract; keeps a 10 MB upload from becoming a 10 MB prompt.
MAX_PROMPT_CHARS = 24_000

T = TypeVar("T", bound=BaseModel)


@dataclass
class Config:
    model: str
    prompt: str
    version: str
    max_retries: int
    timeout_s: float
    max_reasks: int
    max_tool_rounds: int


@dataclass
class StepContext:
    task: "object"  # orchestrator.models.Task; not imported to keep workers importable alone
    config: Config
    meter: Meter
    tuning: "object" = None  # orchestrator.tuning.Tuning as of the claim (rules, queues, policy)
    approval: "object" = None  # the approval opened earlier in this run (route -> act), if any


def document_block(text: str) -> str:
    if len(text) > MAX_PROMPT_CHARS:
        text = text[:MAX_PROMPT_CHARS] + "\n[... truncated ...]"
    return f"<document>\n{text}\n</document>"


def ask_json(ctx: StepContext, messages: list[dict], schema: type[T], check: Callable[[T], None] | None = None) -> T:
    """Ask for a JSON answer and validate it; an invalid answer is re-asked with the error.

    Steps: call the model in JSON mode; parse; validate with the pydantic schema (and `check`);
    on failure append the answer and "Your previous answer was invalid: <error>" and ask again,
    at most `max_reasks` times; then raise InvalidAnswer (permanent).
    """
    conversation = list(messages)
    errors: list[str] = []
    for _ in range(ctx.config.max_reasks + 1):
        answer = ctx.meter.chat(model=ctx.config.model, messages=conversation, json_mode=True)
        try:
            value = schema.model_validate(parse_json_object(answer.content))
            if check:
                check(value)
            return value
        except (ValueError, ValidationError) as exc:
            error = _short_error(exc)
            errors.append(error)
            conversation = conversation + [
                {"role": "assistant", "content": answer.content or ""},
                {"role": "user", "content": f"Your previous answer was invalid: {error} "
                                            "Reply again with one JSON object that follows the instructions."},
            ]
    raise InvalidAnswer(
        f"Answer still invalid after {ctx.config.max_reasks} re-asks: {errors[-1]}",
        evidence={"errors": errors},
    )


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()[:5]]
        return "; ".join(parts)
    return str(exc)
