from labservice.cli import main

main()
