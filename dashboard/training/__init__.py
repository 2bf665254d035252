"""Training: the loop (`fit`), background runs from the Train page (`runs`) and what they show
while they train (`live`), comparing runs (`compare`), their curves (`curves`) and the command
that reproduces a run (`commands`).

The loop's names are re-exported here: `from dashboard import training; training.fit(...)`.
"""

from dashboard.training.loop import DEVICES as DEVICES
from dashboard.training.loop import EVAL_BATCH as EVAL_BATCH
from dashboard.training.loop import MAX_BINS as MAX_BINS
from dashboard.training.loop import MOMENTUM as MOMENTUM
from dashboard.training.loop import OPTIMIZERS as OPTIMIZERS
from dashboard.training.loop import SCHEDULES as SCHEDULES
from dashboard.training.loop import SNAPSHOT_BUDGET as SNAPSHOT_BUDGET
from dashboard.training.loop import STEP_GAMMA as STEP_GAMMA
from dashboard.training.loop import BatchPlan as BatchPlan
from dashboard.training.loop import EpochEvent as EpochEvent
from dashboard.training.loop import Event as Event
from dashboard.training.loop import FitResult as FitResult
from dashboard.training.loop import Schedule as Schedule
from dashboard.training.loop import StepEvent as StepEvent
from dashboard.training.loop import TrainConfig as TrainConfig
from dashboard.training.loop import World as World
from dashboard.training.loop import check_config as check_config
from dashboard.training.loop import current_world as current_world
from dashboard.training.loop import distributed_from_env as distributed_from_env
from dashboard.training.loop import evaluate_model as evaluate_model
from dashboard.training.loop import fit as fit
from dashboard.training.loop import make_optimizer as make_optimizer
from dashboard.training.loop import make_schedule as make_schedule
from dashboard.training.loop import plan_batches as plan_batches
from dashboard.training.loop import resolve_device as resolve_device
from dashboard.training.loop import step_size_epochs as step_size_epochs
