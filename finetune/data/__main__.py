import sys

from finetune.data.builder import main

sys.exit(main())
