"""How a response is judged: scorers (a label and a yes/no answer to a question) and rewards (a number).

Evaluation, red-teaming, online RL and AI feedback all judge responses, so the vocabulary lives here, below
them: the :class:`~tether.scoring.scorers.Scorer` and :class:`~tether.scoring.rewards.Reward` protocols,
their registries (``SCORERS``, ``REWARDS``) and the kinds that need nothing but a model or a rule. The world
registers its gold grader into both, as a plugin would.
"""
