"""What can go wrong in the agent, as values a person can read in one line."""

from __future__ import annotations

from certmint.protocol.problems import Problem


class ClientError(Exception):
    """A failure to report to the user as one plain sentence (no traceback)."""


class AcmeProblemError(ClientError):
    """The CA answered with an RFC 7807 problem document."""

    def __init__(self, problem: Problem, url: str = "") -> None:
        self.problem = problem
        self.url = url
        super().__init__(describe_problem(problem))


def describe_problem(problem: Problem) -> str:
    """One sentence: the CA's detail, and the identifier it concerns."""
    parts = []
    for sub in problem.subproblems or (problem,):
        where = f"{sub.identifier[1]}: " if sub.identifier else ""
        parts.append(f"{where}{sub.detail or sub.type} ({sub.type})")
    if len(problem.subproblems) > 1 and problem.detail:
        return f"{problem.detail}: " + "; ".join(parts)
    return "; ".join(parts)
