"""The value of a numeric LaTeX answer (``\\frac{7}{2}``, ``2\\sqrt{5}``, ``-\\dfrac{\\pi}{3}``,
``3^{4}``), or None for anything else (variables, sets, intervals, text, units, percent).

Used by scoring to tell two different numeric answers apart without math-verify's LaTeX
parser: the grammar is small on purpose, and whatever it does not know it refuses.

    >>> value("2\\\\sqrt{5}") == 2 * 5 ** 0.5
    True
    >>> value("x + 1") is None
    True
"""

from __future__ import annotations

import math
import re

MAX_CHARS = 64
"""Longer answers are left to math-verify."""
MAX_EXPONENT = 64
"""Larger powers are left to math-verify (no overflow, no huge integers)."""
TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+|\\[dt]?frac|\\sqrt|\\pi|\\cdot|\\times|[-+*/^{}()])")
CONSTANTS = {"\\pi": math.pi}


class _Refused(Exception):
    """Not part of the grammar."""


def value(text: str) -> float | None:
    """The finite value of `text`, or None when it is not a plain numeric expression."""
    text = text.strip().replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    if not text or len(text) > MAX_CHARS:
        return None
    tokens, pos = [], 0
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if match is None:
            return None
        tokens.append(match.group(1))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    try:
        parser = _Parser(tokens)
        result = parser.sum()
        if parser.i != len(tokens):
            return None
    except (_Refused, ZeroDivisionError, OverflowError, ValueError):
        return None
    return result if math.isfinite(result) else None


class _Parser:
    """sum := product (('+'|'-') product)*; product := unary (('*'|'/'|\\cdot|\\times|juxtaposed) unary)*;
    unary := '-' unary | power; power := atom ('^' atom)?; atom := number | \\pi | \\frac{}{} |
    \\sqrt{} | '{' sum '}' | '(' sum ')'."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.i = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise _Refused
        self.i += 1
        return token

    def sum(self) -> float:
        total = self.product()
        while self.peek() in ("+", "-"):
            sign = self.take()
            total = total + self.product() if sign == "+" else total - self.product()
        return total

    def product(self) -> float:
        total = self.unary()
        while True:
            token = self.peek()
            if token in ("*", "/", "\\cdot", "\\times"):
                self.take()
                rhs = self.unary()
                total = total / rhs if token == "/" else total * rhs
            elif token in ("\\pi", "\\sqrt", "\\frac", "\\dfrac", "\\tfrac", "{", "("):
                total *= self.unary()  # juxtaposition: 2\sqrt{5}, 3\pi (never two bare numbers)
            else:
                return total

    def unary(self) -> float:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> float:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            exponent = self.atom()
            if abs(exponent) > MAX_EXPONENT:
                raise _Refused
            return base**exponent
        return base

    def group(self) -> float:
        self.take("{")
        inner = self.sum()
        self.take("}")
        return inner

    def atom(self) -> float:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return float(token)
        if token in CONSTANTS:
            return CONSTANTS[token]
        if token in ("\\frac", "\\dfrac", "\\tfrac"):
            num = self.group()
            return num / self.group()
        if token == "\\sqrt":
            inner = self.group()
            if inner < 0:
                raise _Refused
            return math.sqrt(inner)
        if token == "{":
            self.i -= 1
            return self.group()
        if token == "(":
            inner = self.sum()
            self.take(")")
            return inner
        raise _Refused
