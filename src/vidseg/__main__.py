from vidseg.cli.main import main

raise SystemExit(main())
