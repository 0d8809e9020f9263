"""Reading what a materialization recorded, shared by the whole-graph tests."""
import dagster as dg


def output_meta(result, key: str) -> dict:
    """The metadata values of ``key``'s materialization in ``result``."""
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key == dg.AssetKey(key):
            return {k: v.value for k, v in mat.metadata.items()}
    raise KeyError(key)
