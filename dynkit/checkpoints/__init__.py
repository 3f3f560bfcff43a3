"""Safe checkpoint saving and loading.

* ``save_checkpoint(path, model, params, step=, meta=)``: dynkit safetensors or npz, atomic.
* ``load_checkpoint(path, model=None, example_input=None) -> Checkpoint``: dynkit files rebuild
  their model from the stored config; PyTorch ``.pt``/``.pth`` state_dicts
  (``torch.load(weights_only=True)``) and foreign safetensors/npz convert through
  per-architecture name maps, or into the traced graph of a torch module given as ``model=``
  (with ``example_input=``, ``dynkit.models.from_torch``).
* ``load_run(directory) -> Run``: a folder of checkpoints ordered by step, loaded lazily;
* ``iterate(run, every=1, include_last=True)``: the checkpoints of a run, lazily, one model.

No loader ever executes code stored in a file.
"""

from dynkit.checkpoints.load import Checkpoint, load_checkpoint
from dynkit.checkpoints.native import save_checkpoint
from dynkit.checkpoints.run import Run, iterate, load_run
from dynkit.checkpoints.torch_import import NAME_MAPS, convert_state_dict, to_state_dict

__all__ = [
    "NAME_MAPS", "Checkpoint", "Run", "convert_state_dict", "iterate", "load_checkpoint",
    "load_run", "save_checkpoint", "to_state_dict",
]
