"""The base of every document the farm writes into a store (records, catalog entries, the checks they hold): a
field the model does not know is refused, so a misspelt field the farm writes is an error where it is made,
never silently dropped. Reading tolerates what a newer farm wrote: `store.documents.read_document` drops the
fields it does not know, with a note."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Written(BaseModel):
    model_config = ConfigDict(extra="forbid")
