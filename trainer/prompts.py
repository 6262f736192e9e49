"""Sample prompts in kohya's syntax: parsing, and the problems the pre-flight reports (torch-free).

The prompts are text or, when the text is one line ending in `.txt`, a prompt file. One prompt per
line; empty lines and lines starting with `#` are skipped. Options follow the prompt as ` --x value`:
    --n negative prompt    --w width   --h height (rounded down to a multiple of 8)
    --s steps (default 30)    --l CFG scale (7.5)    --d seed    --ss sampler
e.g. `a red disc on a table --n blurry --w 512 --h 768 --s 20 --l 7 --d 42 --ss ddim`.

`parse_prompts` is lenient like sd-scripts (bad options fall back to the defaults, sizes and steps
are clamped), so a sampler never fails mid-run; `read_prompts` also returns every problem with its
line and option, which validation turns into issues before training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from trainer.config import SAMPLERS

DEFAULT_SIZE = 512
DEFAULT_STEPS = 30
DEFAULT_CFG_SCALE = 7.5
# Other names sd-scripts accepts for the same samplers.
SAMPLER_ALIASES = {"k_euler": "euler", "k_euler_a": "euler_a", "k_lms": "lms", "k_dpm_2": "dpm_2",
                   "k_dpm_2_a": "dpm_2_a", "dpmsolver": "dpmsolver++"}
OPTION_NAMES = "--n, --w, --h, --s, --l, --d, --ss"


@dataclass
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int = DEFAULT_SIZE
    height: int = DEFAULT_SIZE
    steps: int = DEFAULT_STEPS
    cfg_scale: float = DEFAULT_CFG_SCALE
    seed: Optional[int] = None
    sampler: Optional[str] = None


@dataclass(frozen=True)
class NumberOption:
    """A numeric option: the SamplePrompt field it sets, its type, the range the check accepts, what it means."""

    field: str
    kind: type
    minimum: float
    maximum: float
    meaning: str
    example: str


NUMBER_OPTIONS = {  # case-insensitive like sd-scripts
    "w": NumberOption("width", int, 64, 8192, "the width in pixels", "512"),
    "h": NumberOption("height", int, 64, 8192, "the height in pixels", "512"),
    "s": NumberOption("steps", int, 1, 1000, "the number of sampling steps", "28"),
    "l": NumberOption("cfg_scale", float, 0, 100, "the CFG scale", "7.5"),
    "d": NumberOption("seed", int, 0, 2**32 - 1, "the seed", "42"),
}
TEXT_OPTIONS = {"n": "negative", "ss": "sampler"}
CLAMPED_FIELDS = ("width", "height", "steps")  # sd-scripts clamps these instead of ignoring them


@dataclass(frozen=True)
class PromptProblem:
    """One problem: `code` keys the translation catalog, `params` fill its template, `message` is English."""

    level: str  # "error" | "warning"
    code: str
    message: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptSource:
    prompts: list[SamplePrompt]
    problems: list[PromptProblem]
    path: Optional[Path] = None  # the prompt file, None for prompts written inline


def prompt_file_path(text: str) -> Optional[Path]:
    """The prompt file `text` names (one line ending in .txt), else None."""
    source = text.strip()
    if source and "\n" not in source and source.lower().endswith(".txt"):
        return Path(source).expanduser()
    return None


def read_prompts(text: str) -> PromptSource:
    """The prompts in `text` (or in the prompt file it names) and every problem found in them."""
    path = prompt_file_path(text)
    if path is None:
        return _parse_text(text, None)
    if not path.is_file():
        return PromptSource([], [_problem("error", "sample_prompt_file_missing",
                                          f"The sample prompt file {path} does not exist. Check the path, or write "
                                          "the prompts in the box instead (one per line).", path=str(path))], path)
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        return PromptSource([], [_problem("error", "sample_prompt_file_unreadable",
                                          f"The sample prompt file {path} cannot be read ({reason}). Save it as "
                                          "UTF-8 text with one prompt per line.", path=str(path), reason=reason)], path)
    source = _parse_text(content, path)
    if not source.prompts:
        source.problems.append(_problem("warning", "sample_prompt_file_empty",
                                        f"The sample prompt file {path} holds no prompts (only empty lines or # "
                                        "comments), so no samples will be made. Write one prompt per line.",
                                        path=str(path)))
    return source


def parse_prompts(text: str) -> list[SamplePrompt]:
    """Prompts from kohya prompt text, or from a .txt prompt file when `text` is such a path."""
    return read_prompts(text).prompts


def parse_prompt_line(line: str) -> SamplePrompt:
    """One prompt line; unknown options and bad values are ignored, as sd-scripts does."""
    return check_prompt_line(line, 1)[0]


def _parse_text(text: str, path: Optional[Path]) -> PromptSource:
    prompts, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            prompt, found = check_prompt_line(line, number)
            prompts.append(prompt)
            problems += found
    return PromptSource(prompts, problems, path)


def check_prompt_line(line: str, number: int) -> tuple[SamplePrompt, list[PromptProblem]]:
    """The prompt on line `number` (defaults where an option is bad) and the problems of its options."""
    prompt, *options = line.split(" --")
    values: dict[str, Any] = {}
    problems: list[PromptProblem] = []
    for option in options:
        name, _, raw = option.strip().partition(" ")
        name, raw = name.lower(), raw.strip()
        if not name:
            continue
        if name not in NUMBER_OPTIONS and name not in TEXT_OPTIONS:
            problems.append(_problem("warning", "sample_prompt_unknown_option",
                                     f"Sample prompts line {number}: --{name} is not a sample prompt option and is "
                                     f"ignored. The options are {OPTION_NAMES}.", line=number, option=name))
        elif not raw:
            problems.append(_problem("error", "sample_prompt_option_empty",
                                     f"Sample prompts line {number}: --{name} has no value. Write it as --{name} "
                                     "<value>, or remove it.", line=number, option=name))
        elif name in TEXT_OPTIONS:
            problem = _sampler_problem(raw, number) if name == "ss" else None
            if problem is None:
                values[TEXT_OPTIONS[name]] = raw
            else:
                problems.append(problem)
        else:
            value, problem = _number_value(NUMBER_OPTIONS[name], name, raw, number)
            if value is not None:
                values[NUMBER_OPTIONS[name].field] = value
            if problem is not None:
                problems.append(problem)
    return _clamped(SamplePrompt(prompt=prompt.strip(), **values)), problems


def _number_value(spec: NumberOption, name: str, raw: str, number: int) -> tuple[Any, Optional[PromptProblem]]:
    """(the value to use or None, the problem or None). An out-of-range size or step count is still used, clamped."""
    try:
        value = spec.kind(raw)
    except ValueError:
        what = "a whole number" if spec.kind is int else "a number"
        return None, _problem("error", "sample_prompt_not_a_number",
                              f"Sample prompts line {number}: --{name} {raw}: {spec.meaning} must be {what}, e.g. "
                              f"--{name} {spec.example}.", line=number, option=name, value=raw, example=spec.example)
    if spec.minimum <= value <= spec.maximum:
        return value, None
    minimum, maximum = spec.kind(spec.minimum), spec.kind(spec.maximum)
    problem = _problem("error", "sample_prompt_out_of_range",
                       f"Sample prompts line {number}: --{name} {raw}: {spec.meaning} must be from {minimum} to "
                       f"{maximum}.", line=number, option=name, value=raw, minimum=minimum, maximum=maximum)
    return (value if spec.field in CLAMPED_FIELDS else None), problem


def _sampler_problem(raw: str, number: int) -> Optional[PromptProblem]:
    if sampler_name(raw) is not None:
        return None
    choices = ", ".join(SAMPLERS)
    return _problem("error", "sample_prompt_unknown_sampler",
                    f"Sample prompts line {number}: --ss {raw} is not a sampler. Use one of: {choices}.",
                    line=number, value=raw, choices=choices)


def sampler_name(name: str) -> Optional[str]:
    """The sampler a prompt's `--ss` names (aliases resolved), None when it names none."""
    name = name.strip().lower()
    name = SAMPLER_ALIASES.get(name, name)
    return name if name in SAMPLERS else None


def _clamped(sample: SamplePrompt) -> SamplePrompt:
    sample.width = max(64, sample.width - sample.width % 8)
    sample.height = max(64, sample.height - sample.height % 8)
    sample.steps = max(1, min(1000, sample.steps))
    return sample


def _problem(level: str, code: str, message: str, **params: Any) -> PromptProblem:
    return PromptProblem(level=level, code=code, message=message, params=params)
