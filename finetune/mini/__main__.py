from finetune.mini.pipeline import main

raise SystemExit(main())
