"""Model-independent IQA infrastructure: rated-image data, preprocessing and crops, training,
pretraining on generator labels, checkpoints, one inference path for train/score/evaluate,
metrics and baselines. Models themselves live in :mod:`petctiqa.models` (registry) and their own
packages (``petctiqa.msiqa`` for MS-IQA)."""
