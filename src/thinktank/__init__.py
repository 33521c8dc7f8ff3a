"""thinktank: make language models think harder and together, and price every answer.

>>> import thinktank
>>> solution = thinktank.solve("What is 7 + 5?", strategy="self-consistency:n=8")
>>> solution.answer, solution.usage.total_tokens, solution.usage.cost_usd
"""

from thinktank.api import BenchOutcome, benchmark, load_bench, report, solve
from thinktank.errors import BudgetExhausted, SpecError, ThinktankError
from thinktank.ledger import Ledger
from thinktank.meter import Budget, Meter, Usage
from thinktank.models import MODELS, Completion, Model, Price, Sampling, load_model
from thinktank.problem import Problem, Task
from thinktank.solution import Candidate, Solution
from thinktank.strategies import STRATEGIES, Context, Strategy, build_strategy
from thinktank.tune import TuneOutcome, tune
from thinktank.verify import equivalent, extract_answer

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "STRATEGIES",
    "BenchOutcome",
    "Budget",
    "BudgetExhausted",
    "Candidate",
    "Completion",
    "Context",
    "Ledger",
    "Meter",
    "Model",
    "Price",
    "Problem",
    "Sampling",
    "Solution",
    "SpecError",
    "Strategy",
    "Task",
    "ThinktankError",
    "TuneOutcome",
    "Usage",
    "benchmark",
    "build_strategy",
    "equivalent",
    "extract_answer",
    "load_bench",
    "load_model",
    "report",
    "solve",
    "tune",
]
