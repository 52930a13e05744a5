"""Guards: content checks that stand between a model and its users.

A guard looks at a conversation on its way in and a reply on its way out and answers with a
:class:`~tether.guard.base.Verdict`: allow, block, cut the reply at the offending text, or redact it (the
offending spans replaced), with the categories it found, a score where it has one, and how long it took.
Guards are registered in :data:`~tether.guard.base.GUARDS` (a config class per kind, like every extension
point); a guard in ``shadow`` mode is run and recorded but never acted on. Built in: ``regex`` (deny-list
patterns, :mod:`tether.guard.patterns`), ``pii`` (personal data and secrets, :mod:`tether.guard.pii`),
``injection`` (prompt-injection and jailbreak shapes, :mod:`tether.guard.injection`), ``classifier`` (a model
trained with ``tether guard train``, :mod:`tether.guard.classifier`), ``llm`` (a language model judging
against a policy, :mod:`tether.guard.llm`), ``refusal`` (labels replies with P(refusal),
:mod:`tether.guard.refusal`), ``probe`` (a linear probe on the model's activations, :mod:`tether.guard.probe`)
and ``cascade`` (tiers, cheapest first, :mod:`tether.guard.cascade`). The gateway
(``tether serve``) runs them on every request and, for streams, on the text as it is produced
(:mod:`tether.serve.hooks`); a model behind guards is a target for ``tether eval`` and ``tether redteam``
(:mod:`tether.guard.target`).
"""

from tether.guard.base import GUARDS, Guard, GuardConfig, Verdict, load_guards

__all__ = ["GUARDS", "Guard", "GuardConfig", "Verdict", "load_guards"]
