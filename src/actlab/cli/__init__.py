"""Entry points: `actlab-train` (cli.train, the Hydra main) and `actlab <command>` (cli.main). Thin: they
parse arguments and call the layers below; nothing imports them."""
