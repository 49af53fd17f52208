"""
Where uploaded file bytes live: :mod:`imd.files.storage` defines the small
interface the file service writes through and the local-disk backend that
implements it.  Metadata (owner, size, MD5, completeness) lives in the
database (:mod:`imd.store.files`); the rules in :mod:`imd.core.files`.
"""
