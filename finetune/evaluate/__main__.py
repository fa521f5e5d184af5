from finetune.evaluate.runner import main

raise SystemExit(main())
