"""Build-time model export: torch models -> training-step graphs stock ONNX Runtime runs.

    zoo.py            mlp, cnn1d, cnn2d
    trainable.py      --trainable all | head | names: which parameters train, the rest is frozen
    optimizers.py     SGD (momentum) and AdamW as pure tensor updates with explicit state
    conv_backward.py  aten.convolution_backward as forward convolutions (exportable)
    step_graph.py     any nn.Module -> train_step.onnx + forward.onnx (default ONNX domain only)
    export.py         export_module(...) / export_artifacts(...) -> the artifacts folder
    export_cli.py     `fleetlearn export --model NAME --input-shape ... --classes N --out DIR`

Importing this package is cheap; torch loads when zoo or export is imported.
"""

__all__: list[str] = []
