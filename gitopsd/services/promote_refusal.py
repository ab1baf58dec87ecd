"""A refused promotion said to whoever ran `gitopsd promote` (or the dashboard's Promote), who pushed nothing.

The hook frames the promotion rule's Verdict for a push: "push to refs/heads/staging refused", advice to push again
(policy.Verdict.refusal_lines). The same verdict, with the same rule id, is framed here for a command: it names what
was run, advice to push again becomes running the command again, and advice only a pusher can follow is left out.
"""

from __future__ import annotations

from ..gate.policy import Verdict

PUSH_AGAIN = "then push again"
PUSHES_ONLY = ("git push ", "git fetch ", "git revert ")  # a line advising only these is for a pusher
HAND_MERGE = "A merge made by hand"  # the promotion commit is no merge made by hand: not its reason


def promotion_refusal_lines(verdict: Verdict, command: str, src: str) -> list[str]:
    """`command`'s refusal by `verdict` (of a promotion from `src`): the command and the rule id, the rule, its detail,
    then what to do in command terms."""
    lines = [f"{command}: refused ({verdict.rule_id})", f"  rule: {verdict.rule}"]
    lines += [f"  {line}" for line in verdict.detail if not line.startswith(HAND_MERGE)]
    advice = []
    if verdict.rule_id == "not-verified-upstream":  # the source's head is not deployed and verified there (yet)
        advice.append(f"wait until {src} has deployed and verified it (gitopsd wait {src}), then run {command} again")
    for line in verdict.instead:
        if command in line or ("gitopsd " not in line and any(git in line for git in PUSHES_ONLY)):
            continue  # what was just run, or a push
        advice.append(line.replace(PUSH_AGAIN, f"then run {command} again"))
    if advice:
        lines += ["  what to do instead:", *[f"    {line}" for line in advice]]
    return lines
