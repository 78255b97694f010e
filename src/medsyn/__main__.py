from medsyn.cli import main

raise SystemExit(main())
