from trueno_ublk.cli import main

main()
