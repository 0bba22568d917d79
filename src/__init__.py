"""ResNet parameter-efficiency template.

Floors, imported one way only (``.importlinter``, checked by ``lint-imports`` in CI; lazy imports count)::

    commands          cli | sweep | report | lesion | prune        python -m src.<command>
        |
    command support   reporting  ->  sweeping  ->  cli_support | analysis
        |
    training          callbacks | modules  ->  runs | data
        |
    networks          models                                       plain nn.Modules, no Lightning
        |
    shared helpers    tables  ->  class_paths | files | machine

``a | b``: beside each other, neither imports the other; ``a -> b``: ``a`` may import ``b``, never the
reverse. No package has an import cycle among its modules. docs/fork.md says where a new model, data set,
metric or callback goes.
"""
