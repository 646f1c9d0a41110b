"""MS-IQA (Wang et al., MICCAI 2025): ResNet-50 + Swin-T multi-scale fusion, AGCA, weighted score regressor."""
