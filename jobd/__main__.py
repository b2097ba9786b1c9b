import sys

from jobd.main import main

sys.exit(main())
