"""vita-tiny: a synthetic omni-modal task and the one command that trains a ~6 M-parameter VITA on it, on CPU.

- `recipes.vita_tiny.data` generates the data (shapes in images and videos, spoken and typed questions, background
  talk, English and Chinese text QA) in the converted format of `recipes/data.py`;
- `recipes.vita_tiny.initialize` builds the starting point (English tokenizer, Chinese vocabulary extension, CMVN,
  processor, untrained model);
- `recipes.vita_tiny.run` (`python -m recipes.vita_tiny`) runs everything and exports `spaces_demo/vita-tiny/`.
"""
