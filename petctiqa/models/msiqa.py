"""Registry entry for MS-IQA (the network itself lives in :mod:`petctiqa.msiqa.model`)."""

from __future__ import annotations

from petctiqa.models.registry import ModelEntry, register_model
from petctiqa.msiqa.model import MsIqa, MsIqaConfig

register_model(
    ModelEntry(
        name="msiqa",
        architecture="MS-IQA",
        summary="ResNet-50 + Swin-T multi-scale fusion, AGCA, S x W regressor (MICCAI 2025)",
        input_contract="RGB 224 x 224: bicubic resize (paper) or 224-px native crops",
        needs_gpu=True,
        config_from_dict=MsIqaConfig.from_dict,
        build=MsIqa,
        default_config=MsIqaConfig,
        head_prefixes=(
            "score_attention.",
            "reducers.",
            "stage_attention.",
            "channel_pool.",
            "score_branch.",
            "weight_branch.",
        ),
    )
)
