"""A model server config that serves chosen versions of one model base path.

With ``--model_base_path`` a server serves only the highest version; tests written against a
particular release (its photos, its figures) pin it with ``model_version_policy { specific }``,
so publishing a newer version does not change what they check.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def pinned_server_args(
    folder: Path, base_path: Path, versions: Sequence[int], name: str = "fashion"
) -> list[str]:
    """Write ``<folder>/models.config`` serving exactly ``versions`` and return the server flags.

    Args:
        folder: where the config file goes (created if missing).
        base_path: the model base path, e.g. ``models/fashion``.
        versions: the version numbers to serve.
        name: the served model name.

    Returns:
        ``["--model_config_file", <path>]`` for ``python -m serving``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    listed = " ".join(f"versions: {v}" for v in versions)
    config = folder / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "{name}" base_path: "{Path(base_path).resolve()}" '
        f'model_platform: "tensorflow" model_version_policy {{ specific {{ {listed} }} }} }} }}\n'
    )
    return ["--model_config_file", str(config)]
