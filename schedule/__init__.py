"""Schedules (method.md sections 2-6): baselines, costs (L_c, L_p), Algorithm 1 and the fine-grid fit, the online
learner, stored schedules, and the post-hoc searches (:mod:`schedule.searches`).

A schedule, whatever made it, is used through two methods: ``steps(K) -> f[K+1]`` (ascending times, ``t_0 = 0``
data end, ``t_K = 1``) and ``has(K)``. :class:`schedule.baselines.Baseline`, :class:`schedule.fit.LengthFunction`
(any K: ``t_k = Lambda^{-1}(k Lambda / K)``) and :class:`schedule.store.Ladders` (the stored K only) implement them.
"""
from schedule import baselines, costs, fit  # noqa: F401  (registers baselines and costs)
