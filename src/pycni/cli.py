"""`pycni`: the node operator's command (click). Never on a plugin's hot path."""

from __future__ import annotations

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="pycni")
def main() -> None:
    """pycni: CNI plugins in Python, and the tools to run them on a node."""


@main.command()
@click.option("--bin-dir", default="/opt/cni/bin", show_default=True, help="where runtimes look for CNI plugins")
@click.option("--conf-dir", default="/etc/cni/net.d", show_default=True, help="where runtimes read network configs")
@click.option("--conflist", "conflist_path", type=click.Path(exists=True, dir_okay=False),
              help="conflist template to place in --conf-dir (default: none)")
@click.option("--pod-cidr", "pod_cidrs", multiple=True, help="the node's pod CIDR; twice for dual-stack")
def install(bin_dir: str, conf_dir: str, conflist_path: str | None, pod_cidrs: tuple[str, ...]) -> None:
    """Write one launcher per plugin type into BIN_DIR (and the conflist into CONF_DIR)."""
    from .install import install_conflist, install_launchers

    for path in install_launchers(bin_dir):
        click.echo(f"installed {path}")
    if conflist_path:
        click.echo(f"installed {install_conflist(conflist_path, conf_dir, list(pod_cidrs))}")


if __name__ == "__main__":
    main()
