"""Schedules (method.md sections 2-6): baselines, costs (L_c, L_p), Algorithm 1 and the fine-grid fit, the online
learner, stored schedules, and the post-hoc searches (:mod:`schedule.searches`).

A schedule, whatever made it, is used through two methods: ``steps(K) -> f[K+1]`` (ascending times, ``t_0 = 0``
data end, ``t_K = 1``) and ``has(K)``: the protocol :class:`schedule.schedules.Schedule`, which
:class:`schedule.schedules.Baseline`, :class:`schedule.schedules.LengthFunction` (any K:
``t_k = Lambda^{-1}(k Lambda / K)``) and :class:`schedule.schedules.Ladders` (the stored K only) implement;
:func:`schedule.schedules.resolve` turns a name into one.
"""
from schedule import baselines, costs, fit, schedules  # noqa: F401  (registers baselines and costs)
