"""The assets, one module per pipeline stage: thin wrappers around the domain modules of ``intent_assets``."""

import warnings

# We use a few Dagster APIs marked beta on purpose (dagster-pandera types, code references); say so once here
# rather than on every load of the definitions.
warnings.filterwarnings("ignore", message=r".* is currently in beta", category=Warning)
