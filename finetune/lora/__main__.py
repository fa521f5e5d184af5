import sys

from finetune.lora.cli import main

sys.exit(main())
