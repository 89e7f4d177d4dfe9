-- Workspaces have names people give them (shown in the header, the tab and the home page).
ALTER TABLE workspaces ADD COLUMN name TEXT NOT NULL DEFAULT '';
UPDATE workspaces SET name = CASE
    WHEN working_dir IS NOT NULL AND rtrim(working_dir, '/') <> ''
        THEN regexp_replace(rtrim(working_dir, '/'), '^.*/', '')
    ELSE 'Workspace ' || left(id, 6)
END;
