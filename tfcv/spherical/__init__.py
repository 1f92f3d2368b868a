"""The experiments of Spherical CNNs (Cohen et al. 2018) as library code.

Each module holds one experiment's testable parts; the `tfcv spherical`
commands are thin programs around them.
"""
