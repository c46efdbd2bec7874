"""What ``splatdistill data check`` and ``data show`` look at: a dataset's files and values
(:mod:`.dataset`), its geometry across views (:mod:`.geometry`: reprojection, normals, label transfer)
and a contact sheet of its views (:mod:`.contact_sheet`).

Nothing is imported here: :mod:`.dataset` reads datasets through :func:`splatdistill.data.load_dataset`,
which the package's own loading must not wait on.
"""
