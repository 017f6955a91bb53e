"""Cases shared by the recurrence tests (returns, multistep, off-policy,
token baseline): the mask layouts every estimator runs on, and small masked
batches for hypothesis properties."""

from hypothesis import strategies as st
import numpy as np

from cajax import testing

TOL = dict(rtol=1e-5, atol=1e-5)
maybe_jit = testing.jit_with_static
B, T = 6, 5
MASKS = testing.example_masks()
# Every mask jitted; the eager path once (op-by-op dispatch is slow on CPU).
MASK_CASES = [(name, True) for name in MASKS] + [("interior", False)]

# Property batches have fixed shapes (one compile per jitted function); PAD
# columns of padding are appended by the padding-invariance properties.
PB, PT, PAD = 3, 5, 2
_FLOATS = st.floats(-3, 3, allow_nan=False, width=32)


@st.composite
def masked_batches(draw):
  """(mask bool[PB, PT], r f32[PB, PT], v f32[PB, PT]), entries in [-3, 3]."""
  size = PB * PT
  mask = np.array(draw(st.lists(st.booleans(), min_size=size,
                                max_size=size))).reshape(PB, PT)
  r, v = (np.array(draw(st.lists(_FLOATS, min_size=size, max_size=size)),
                   np.float32).reshape(PB, PT) for _ in range(2))
  return mask, r, v
