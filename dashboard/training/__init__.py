"""Training: the loop (`fit`), background runs from the Train page (`runs`), comparing runs
(`compare`), their curves (`curves`) and the command that reproduces a run (`commands`).

The loop's names are re-exported here: `from dashboard import training; training.fit(...)`.
"""

from dashboard.training.fit import DEVICES as DEVICES
from dashboard.training.fit import EVAL_BATCH as EVAL_BATCH
from dashboard.training.fit import MAX_BINS as MAX_BINS
from dashboard.training.fit import MOMENTUM as MOMENTUM
from dashboard.training.fit import OPTIMIZERS as OPTIMIZERS
from dashboard.training.fit import SCHEDULES as SCHEDULES
from dashboard.training.fit import SNAPSHOT_BUDGET as SNAPSHOT_BUDGET
from dashboard.training.fit import STEP_GAMMA as STEP_GAMMA
from dashboard.training.fit import BatchPlan as BatchPlan
from dashboard.training.fit import EpochEvent as EpochEvent
from dashboard.training.fit import Event as Event
from dashboard.training.fit import FitResult as FitResult
from dashboard.training.fit import Schedule as Schedule
from dashboard.training.fit import StepEvent as StepEvent
from dashboard.training.fit import TrainConfig as TrainConfig
from dashboard.training.fit import World as World
from dashboard.training.fit import check_config as check_config
from dashboard.training.fit import current_world as current_world
from dashboard.training.fit import distributed_from_env as distributed_from_env
from dashboard.training.fit import evaluate_model as evaluate_model
from dashboard.training.fit import fit as fit
from dashboard.training.fit import make_optimizer as make_optimizer
from dashboard.training.fit import make_schedule as make_schedule
from dashboard.training.fit import plan_batches as plan_batches
from dashboard.training.fit import resolve_device as resolve_device
from dashboard.training.fit import step_size_epochs as step_size_epochs
