from ckpt_guard.cli import main

raise SystemExit(main())
