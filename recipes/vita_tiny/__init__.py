"""vita-tiny: a synthetic omni-modal task small enough to train a ~10 M-parameter VITA on CPU in minutes.

`recipes.vita_tiny.data` generates the data (shapes in images and videos, spoken and typed questions, background
talk, English and Chinese text QA) in the converted format of `recipes/data.py`.
"""
