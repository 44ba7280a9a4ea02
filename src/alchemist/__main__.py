from alchemist.cli.main import main

raise SystemExit(main())
