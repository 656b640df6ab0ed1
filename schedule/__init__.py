"""Schedule costs, Algorithm 1 and the score-optimal fit, and the baseline schedules."""
from schedule import baselines, costs, fit  # noqa: F401  (registers baselines and costs)
