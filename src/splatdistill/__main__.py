from splatdistill.cli import main

raise SystemExit(main())
