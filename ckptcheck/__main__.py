from ckptcheck.cli import main

main()
