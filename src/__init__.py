"""ResNet parameter-efficiency template.

Layers, imported in one direction only::

    src.cli  ->  src.modules / src.data / src.callbacks  ->  src.models

``src.models`` holds plain ``nn.Module`` networks (no Lightning), ``src.modules`` the
LightningModule that trains them, ``src.data`` the LightningDataModules and
``src.callbacks`` the training-time measurements.
"""
