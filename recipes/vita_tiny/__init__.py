"""vita-tiny: a synthetic omni-modal task and the one command that trains a ~6 M-parameter VITA on it, on CPU.

- `recipes.vita_tiny.data` generates the data (shapes in images and videos, spoken and typed questions, background
  talk, English and Chinese text QA) in the converted format of `recipes/data.py`, from the world of shapes
  (`world`), the questions and sentences (`phrasings`) and the speakers (`voices`) beside it;
- `recipes.vita_tiny.initialize` builds the starting point (English tokenizer, Chinese vocabulary extension, CMVN,
  processor, untrained model);
- `recipes.vita_tiny.run` (`python -m recipes.vita_tiny`) runs everything and exports `spaces_demo/vita-tiny/`;
- beside the code (package data): the four stage YAMLs run by `python -m recipes.sft`, `smoke.yaml` (a few-second CPU
  run of a fresh tiny model), and README.md with the results and `training_curves.png`.
"""
