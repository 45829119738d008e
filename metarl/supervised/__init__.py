"""Supervised meta-learning: sinusoid regression and few-shot image classification.

MAML (second and first order), Reptile and a jointly-trained baseline, all built on
the functional inner update :func:`metarl.adaptation.gradient_step`. Nothing here
depends on the RL code.
"""
