"""`python -m gmvae` (and `torchrun -m gmvae`) run the command line."""

from gmvae.cli import main

main()
