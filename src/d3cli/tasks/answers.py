"""Final-answer extraction and comparison for the math tasks (GSM8K, MATH).

`last_boxed` reads the content of the last ``\\boxed{...}`` with nested braces matched.
GSM8K answers are numbers compared after normalisation; MATH answers are LaTeX compared by
math-verify when it is installed, with a plain normaliser first and as the fallback.
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation
from fractions import Fraction

BOX_COMMANDS = ("\\boxed", "\\fbox")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 5``); None if the
    last one is missing or unclosed (a cut-off answer)."""
    start = max(text.rfind(command) for command in BOX_COMMANDS)
    if start < 0:
        return None
    command = next(c for c in BOX_COMMANDS if text.startswith(c, start))
    rest = text[start + len(command) :]
    if rest.startswith(" "):  # \boxed 5: up to the next space or dollar sign
        match = re.match(r" +([^\s$]+)", rest)
        return match.group(1) if match else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for index, char in enumerate(rest):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:index]
    return None


def canonical_number(text: str) -> str | None:
    """The first number in `text` as a canonical decimal string ("1,000.50" → "1000.5")."""
    match = NUMBER.search(text.replace("$", ""))
    if not match:
        return None
    try:
        value = Decimal(match.group(0).replace(",", ""))
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def gsm8k_answer(output: str) -> str | None:
    """The final number: after the last ``####`` or inside the last ``\\boxed{}``, whichever
    comes later in the output, normalised by `canonical_number`."""
    mark = output.rfind("####")
    box = max(output.rfind(command) for command in BOX_COMMANDS)
    if mark < 0 and box < 0:
        return None
    if box > mark:
        content = last_boxed(output)
        return None if content is None else canonical_number(content)
    return canonical_number(output[mark + len("####") :])


# --- MATH ---------------------------------------------------------------------------------

TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\{([^{}]*)\}")
DROPPED = (
    "\\left",
    "\\right",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
    "^\\circ",
    "^{\\circ}",
    "\\%",
    "%",
    "\\$",
    "$",
    "\\displaystyle",
)


def normalise_math(answer: str) -> str:
    """A plain LaTeX answer normaliser: drops spacing, units markup, degrees, percent and
    dollar signs; unifies fraction commands and shorthand (\\frac12); canonical numbers."""
    text = answer.strip()
    for _ in range(2):  # \text{\textbf{x}} needs two passes
        text = TEXT_COMMANDS.sub(r"\1", text)
    for token in DROPPED:
        text = text.replace(token, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", text)
    text = re.sub(r"\s+", "", text).rstrip(".")
    text = re.sub(r"^[a-zA-Z]=", "", text)  # "x=5" → "5"
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    number = as_fraction(text)
    if number is not None:
        return str(number)
    return text.lower()


def as_fraction(text: str) -> Fraction | None:
    """Integers, decimals, a/b and \\frac{a}{b} (with an optional sign) as exact fractions."""
    match = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", text)
    try:
        if match:
            value = Fraction(int(match.group(2)), int(match.group(3)))
            return -value if match.group(1) else value
        if re.fullmatch(r"-?\d+(\.\d+)?(/-?\d+)?|-?\.\d+", text):
            return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def math_verify_equal(reference: str, predicted: str) -> bool | None:
    """math-verify's verdict, or None when it is not installed or cannot parse either side."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    # math-verify times out through SIGALRM, which only the main thread may set.
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = parse(f"${reference}$", parsing_timeout=limit)
        guess = parse(f"${predicted}$", parsing_timeout=limit)
        if not gold or not guess:
            return None
        return bool(verify(gold, guess, timeout_seconds=limit))
    except Exception:  # a parser failure is "cannot tell", not a crash of the scorer
        return None


def math_equal(reference: str, predicted: str, use_math_verify: bool = True) -> bool:
    """Equal after the plain normaliser, else by math-verify (when installed and asked for)."""
    if normalise_math(reference) == normalise_math(predicted):
        return True
    return bool(use_math_verify and math_verify_equal(reference, predicted))
