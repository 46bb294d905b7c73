"""Build-time model zoo: torch definitions exported to ONNX Runtime training artifacts.

    zoo.py         mlp, cnn1d, cnn2d (only layers ORT can train)
    export.py      export_artifacts(...) -> Manifest: the self-contained artifacts folder
    export_cli.py  `fleetlearn export --model NAME --input-shape ... --classes N --out DIR`

Importing this package is cheap; torch loads when zoo or export is imported.
"""

__all__: list[str] = []
