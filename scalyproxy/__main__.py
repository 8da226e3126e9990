from scalyproxy.cli import main

raise SystemExit(main())
