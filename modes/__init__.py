"""The mode runners of ``main.py``: the only code that reads a workdir's layout or the whole config.

``train`` (:mod:`modes.train`), ``eval`` (:mod:`modes.evaluate`), ``sample`` (:mod:`modes.sample`) and
``fit_schedule`` (:mod:`modes.fit_schedule`), each ``run(config, workdir)``-shaped; the libraries below
(``eval``, ``train``, ``schedule``, ``ddm``) take config sections or plain arguments.
"""
