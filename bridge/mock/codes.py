"""The code lists of the mock hospital: diagnoses, procedures, lab tests, drugs.

Each legacy system speaks its own local codes (``GLU``, ``RX-0007``,
``MED0107``, ``ALG-PCN``); the standard code each one stands for (LOINC,
RxNorm, ICD-10-CM, CPT) is listed here too, so ``docs/mock.md`` and the
gateway's code tables can be built from one place. The mock itself never
sends the standard codes except where the legacy system really would
(ICD-10-CM and CPT are the billing system's native vocabulary).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ALLERGENS",
    "BILLING_ONLY_DIAGNOSES",
    "CONDITIONS",
    "DIAGNOSIS_CODES",
    "DRUGS",
    "DRUGS_BY_RX_CODE",
    "LAB_PANELS",
    "LAB_TESTS",
    "PROCEDURES",
    "PROCEDURE_CODES",
    "SPECIALTIES",
    "Allergen",
    "Condition",
    "Drug",
    "LabTest",
    "Procedure",
]


class Condition(NamedTuple):
    """An ICD-10-CM code the EHR's problem list uses."""

    icd10: str
    description: str
    sensitive: bool  # mental health, HIV, substance use: flagged Y in the EHR
    chronic: bool  # chronic problems stay ACTIVE; acute ones are mostly RESOLVED
    weight: float  # relative prevalence among patients old enough
    min_age: int


# Real ICD-10-CM codes with their official descriptions (FY2024 edition).
CONDITIONS: tuple[Condition, ...] = (
    Condition("I10", "Essential (primary) hypertension", False, True, 14, 25),
    Condition("E78.5", "Hyperlipidemia, unspecified", False, True, 12, 25),
    Condition("E78.00", "Pure hypercholesterolemia, unspecified", False, True, 4, 25),
    Condition("E11.9", "Type 2 diabetes mellitus without complications", False, True, 9, 25),
    Condition("E03.9", "Hypothyroidism, unspecified", False, True, 5, 18),
    Condition("E66.9", "Obesity, unspecified", False, True, 8, 10),
    Condition("J45.909", "Unspecified asthma, uncomplicated", False, True, 7, 2),
    Condition("J44.9", "Chronic obstructive pulmonary disease, unspecified", False, True, 3, 45),
    Condition("J30.9", "Allergic rhinitis, unspecified", False, True, 5, 3),
    Condition("K21.9", "Gastro-esophageal reflux disease without esophagitis", False, True, 6, 18),
    Condition("M54.50", "Low back pain, unspecified", False, False, 6, 18),
    Condition("M17.11", "Unilateral primary osteoarthritis, right knee", False, True, 3, 45),
    Condition(
        "M81.0",
        "Age-related osteoporosis without current pathological fracture",
        False,
        True,
        2,
        55,
    ),
    Condition("M10.9", "Gout, unspecified", False, True, 2, 30),
    Condition(
        "I25.10",
        "Atherosclerotic heart disease of native coronary artery without angina pectoris",
        False,
        True,
        3,
        45,
    ),
    Condition("I48.91", "Unspecified atrial fibrillation", False, True, 2, 55),
    Condition("I50.9", "Heart failure, unspecified", False, True, 2, 55),
    Condition("N18.9", "Chronic kidney disease, unspecified", False, True, 2, 45),
    Condition("D64.9", "Anemia, unspecified", False, False, 3, 0),
    Condition(
        "G43.909",
        "Migraine, unspecified, not intractable, without status migrainosus",
        False,
        True,
        4,
        12,
    ),
    Condition("G47.33", "Obstructive sleep apnea (adult) (pediatric)", False, True, 3, 30),
    Condition("E55.9", "Vitamin D deficiency, unspecified", False, False, 3, 18),
    Condition("J06.9", "Acute upper respiratory infection, unspecified", False, False, 6, 0),
    Condition("J02.0", "Streptococcal pharyngitis", False, False, 3, 3),
    Condition("J02.9", "Acute pharyngitis, unspecified", False, False, 3, 0),
    Condition("N39.0", "Urinary tract infection, site not specified", False, False, 4, 5),
    Condition("Z87.891", "Personal history of nicotine dependence", False, True, 4, 25),
    Condition("F32.9", "Major depressive disorder, single episode, unspecified", True, True, 5, 12),
    Condition("F41.1", "Generalized anxiety disorder", True, True, 4, 12),
    Condition("F10.20", "Alcohol dependence, uncomplicated", True, True, 1.5, 18),
    Condition("F11.20", "Opioid dependence, uncomplicated", True, True, 0.7, 18),
    Condition("F17.210", "Nicotine dependence, cigarettes, uncomplicated", True, True, 3, 16),
    Condition("B20", "Human immunodeficiency virus [HIV] disease", True, True, 0.5, 18),
    Condition(
        "Z21",
        "Asymptomatic human immunodeficiency virus [HIV] infection status",
        True,
        True,
        0.3,
        18,
    ),
)

# Codes billing accepts beyond the problem list: encounter reasons and symptoms.
BILLING_ONLY_DIAGNOSES: dict[str, str] = {
    "Z00.00": "Encounter for general adult medical examination without abnormal findings",
    "Z00.129": "Encounter for routine child health examination without abnormal findings",
    "Z23": "Encounter for immunization",
    "Z01.419": (
        "Encounter for gynecological examination (general) (routine) without abnormal findings"
    ),
    "Z79.4": "Long term (current) use of insulin",
    "Z79.899": "Other long term (current) drug therapy",
    "R05.9": "Cough, unspecified",
    "R10.9": "Unspecified abdominal pain",
    "R50.9": "Fever, unspecified",
    "R51.9": "Headache, unspecified",
}

DIAGNOSIS_CODES: dict[str, str] = {
    **{c.icd10: c.description for c in CONDITIONS},
    **BILLING_ONLY_DIAGNOSES,
}


class Procedure(NamedTuple):
    """A CPT code billing accepts, with the hospital's list price."""

    cpt: str
    description: str
    fee: str  # decimal text, US dollars


PROCEDURES: tuple[Procedure, ...] = (
    Procedure("99202", "Office visit, new patient, straightforward", "75.00"),
    Procedure("99203", "Office visit, new patient, low complexity", "115.00"),
    Procedure("99204", "Office visit, new patient, moderate complexity", "170.00"),
    Procedure("99212", "Office visit, established patient, straightforward", "60.00"),
    Procedure("99213", "Office visit, established patient, low complexity", "95.00"),
    Procedure("99214", "Office visit, established patient, moderate complexity", "135.00"),
    Procedure("99215", "Office visit, established patient, high complexity", "190.00"),
    Procedure("99395", "Preventive visit, established patient, 18-39 years", "160.00"),
    Procedure("99396", "Preventive visit, established patient, 40-64 years", "175.00"),
    Procedure("99397", "Preventive visit, established patient, 65 years and over", "185.00"),
    Procedure("36415", "Routine venipuncture", "10.00"),
    Procedure("80048", "Basic metabolic panel", "22.00"),
    Procedure("80053", "Comprehensive metabolic panel", "30.00"),
    Procedure("80061", "Lipid panel", "35.00"),
    Procedure("83036", "Hemoglobin A1c", "25.00"),
    Procedure("84443", "Thyroid stimulating hormone (TSH)", "40.00"),
    Procedure("85025", "Complete blood count with automated differential", "20.00"),
    Procedure("87880", "Rapid streptococcus group A antigen test", "28.00"),
    Procedure("81025", "Urine pregnancy test", "15.00"),
    Procedure("93000", "Electrocardiogram, complete", "55.00"),
    Procedure("90471", "Immunization administration, first vaccine", "25.00"),
    Procedure("90686", "Influenza vaccine, quadrivalent, preservative free, IM", "30.00"),
    Procedure("71046", "Chest X-ray, 2 views", "85.00"),
    Procedure("81002", "Urinalysis, non-automated, without microscopy", "8.00"),
)

PROCEDURE_CODES: dict[str, Procedure] = {p.cpt: p for p in PROCEDURES}


class LabTest(NamedTuple):
    """One of the lab's local test codes and the LOINC code it stands for."""

    code: str
    name: str
    loinc: str
    loinc_name: str
    units: str
    low: float | None  # reference range; None = open on that side
    high: float | None
    critical_low: float | None
    critical_high: float | None
    decimals: int
    mean: float  # what a healthy patient's value centres on
    sd: float
    qualitative: bool = False


LAB_TESTS: dict[str, LabTest] = {
    t.code: t
    for t in (
        LabTest("GLU", "Glucose", "2345-7", "Glucose [Mass/volume] in Serum or Plasma",
                "mg/dL", 70, 99, 50, 400, 0, 88, 9),
        LabTest("NA", "Sodium", "2951-2", "Sodium [Moles/volume] in Serum or Plasma",
                "mmol/L", 136, 145, 120, 160, 0, 140, 2.2),
        LabTest("K", "Potassium", "2823-3", "Potassium [Moles/volume] in Serum or Plasma",
                "mmol/L", 3.5, 5.1, 2.8, 6.2, 1, 4.2, 0.35),
        LabTest("BUN", "Urea Nitrogen", "3094-0",
                "Urea nitrogen [Mass/volume] in Serum or Plasma",
                "mg/dL", 7, 20, None, 100, 0, 14, 3.5),
        LabTest("CREAT", "Creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma",
                "mg/dL", 0.6, 1.3, None, 7.0, 2, 0.92, 0.15),
        LabTest("ALT", "ALT (SGPT)", "1742-6",
                "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
                "U/L", 7, 56, None, 1000, 0, 26, 9),
        LabTest("CHOL", "Cholesterol, Total", "2093-3",
                "Cholesterol [Mass/volume] in Serum or Plasma",
                "mg/dL", None, 200, None, None, 0, 178, 22),
        LabTest("LDL", "LDL Cholesterol (calc)", "13457-7",
                "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
                "mg/dL", None, 100, None, None, 0, 92, 16),
        LabTest("HDL", "HDL Cholesterol", "2085-9",
                "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
                "mg/dL", 40, None, None, None, 0, 55, 10),
        LabTest("TRIG", "Triglycerides", "2571-8",
                "Triglyceride [Mass/volume] in Serum or Plasma",
                "mg/dL", None, 150, None, 1000, 0, 115, 30),
        LabTest("A1C", "Hemoglobin A1c", "4548-4",
                "Hemoglobin A1c/Hemoglobin.total in Blood",
                "%", 4.0, 5.6, None, None, 1, 5.2, 0.3),
        LabTest("TSH", "TSH", "3016-3", "Thyrotropin [Units/volume] in Serum or Plasma",
                "mIU/L", 0.45, 4.5, None, None, 2, 1.9, 0.8),
        LabTest("WBC", "White Blood Cell Count", "6690-2",
                "Leukocytes [#/volume] in Blood by Automated count",
                "10*3/uL", 4.5, 11.0, 2.0, 30.0, 1, 7.2, 1.4),
        LabTest("HGB", "Hemoglobin", "718-7", "Hemoglobin [Mass/volume] in Blood",
                "g/dL", 12.0, 17.5, 7.0, 20.0, 1, 14.2, 1.1),
        LabTest("PLT", "Platelet Count", "777-3",
                "Platelets [#/volume] in Blood by Automated count",
                "10*3/uL", 150, 400, 50, 1000, 0, 255, 45),
        LabTest("STREP", "Rapid Strep A Screen", "78012-2",
                "Streptococcus pyogenes Ag [Presence] in Throat by Rapid immunoassay",
                "", None, None, None, None, 0, 0, 0, qualitative=True),
        LabTest("HCGU", "Pregnancy Test, Urine", "2106-3",
                "Choriogonadotropin (pregnancy test) [Presence] in Urine",
                "", None, None, None, None, 0, 0, 0, qualitative=True),
    )
}  # fmt: skip

# What a clinician orders: a panel becomes one accession with these results.
LAB_PANELS: dict[str, tuple[str, ...]] = {
    "BMP": ("GLU", "NA", "K", "BUN", "CREAT"),
    "BMP+ALT": ("GLU", "NA", "K", "BUN", "CREAT", "ALT"),
    "CBC": ("WBC", "HGB", "PLT"),
    "LIPID": ("CHOL", "LDL", "HDL", "TRIG"),
    "A1C": ("A1C",),
    "A1C+GLU": ("A1C", "GLU"),
    "TSH": ("TSH",),
    "STREP": ("STREP",),
    "HCGU": ("HCGU",),
}


class Drug(NamedTuple):
    """One drug as the pharmacy (RX-nnnn) and the EHR (MEDnnnn) code it."""

    rx_code: str  # the pharmacy's local code
    ehr_code: str  # the EHR's formulary code
    rxcui: str  # RxNorm concept (SCD unless noted in the name)
    rxnorm_name: str
    pharmacy_name: str  # how the pharmacy prints it
    ehr_name: str  # how the EHR shows it
    dose: str
    route: str  # EHR route code
    frequency: str  # EHR frequency code
    sig: str  # the pharmacy label text
    quantity: int
    refills: int
    chronic: bool
    treats: tuple[str, ...]  # ICD-10-CM codes it is prescribed for


def _drug(
    n: int,
    rxcui: str,
    rxnorm_name: str,
    ehr_name: str,
    dose: str,
    route: str,
    frequency: str,
    sig: str,
    quantity: int,
    refills: int,
    treats: tuple[str, ...],
    *,
    chronic: bool = True,
) -> Drug:
    return Drug(
        rx_code=f"RX-{n:04d}",
        ehr_code=f"MED{100 + n:04d}",
        rxcui=rxcui,
        rxnorm_name=rxnorm_name,
        pharmacy_name=rxnorm_name.upper()
        .replace(" ORAL TABLET", " TAB")
        .replace(" ORAL CAPSULE", " CAP"),
        ehr_name=ehr_name,
        dose=dose,
        route=route,
        frequency=frequency,
        sig=sig,
        quantity=quantity,
        refills=refills,
        chronic=chronic,
        treats=treats,
    )


# RxCUIs as RxNorm and Synthea's medication tables use them. Names follow
# RxNorm's normalized form; the pharmacy prints them upper-case, abbreviated.
DRUGS: tuple[Drug, ...] = (
    _drug(1, "314076", "lisinopril 10 MG Oral Tablet", "Lisinopril 10 mg tablet", "10 mg",
          "PO", "QD", "TAKE 1 TABLET BY MOUTH ONCE DAILY", 30, 5, ("I10", "I50.9")),
    _drug(2, "197361", "amlodipine 5 MG Oral Tablet", "Amlodipine 5 mg tablet", "5 mg",
          "PO", "QD", "TAKE 1 TABLET BY MOUTH ONCE DAILY", 30, 5, ("I10",)),
    _drug(3, "310798", "hydrochlorothiazide 25 MG Oral Tablet", "HCTZ 25 mg tablet", "25 mg",
          "PO", "QAM", "TAKE 1 TABLET BY MOUTH EVERY MORNING", 30, 5, ("I10",)),
    _drug(4, "979485", "losartan potassium 25 MG Oral Tablet", "Losartan 25 mg tablet",
          "25 mg", "PO", "QD", "TAKE 1 TABLET BY MOUTH ONCE DAILY", 30, 5, ("I10", "N18.9")),
    _drug(5, "312961", "simvastatin 20 MG Oral Tablet", "Simvastatin 20 mg tablet", "20 mg",
          "PO", "QHS", "TAKE 1 TABLET BY MOUTH AT BEDTIME", 30, 5, ("E78.5", "E78.00")),
    _drug(6, "259255", "atorvastatin 80 MG Oral Tablet", "Atorvastatin 80 mg tablet", "80 mg",
          "PO", "QHS", "TAKE 1 TABLET BY MOUTH AT BEDTIME", 30, 5,
          ("E78.5", "E78.00", "I25.10")),
    _drug(7, "860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
          "Metformin ER 500 mg tablet", "500 mg", "PO", "BID",
          "TAKE 1 TABLET BY MOUTH TWICE DAILY WITH MEALS", 60, 5, ("E11.9",)),
    _drug(8, "1373463", "canagliflozin 100 MG Oral Tablet", "Canagliflozin 100 mg tablet",
          "100 mg", "PO", "QAM", "TAKE 1 TABLET BY MOUTH BEFORE BREAKFAST", 30, 5, ("E11.9",)),
    _drug(9, "966222", "levothyroxine sodium 0.075 MG Oral Tablet",
          "Levothyroxine 75 mcg tablet", "75 mcg", "PO", "QAM",
          "TAKE 1 TABLET BY MOUTH EVERY MORNING ON AN EMPTY STOMACH", 30, 11, ("E03.9",)),
    _drug(10, "308182", "amoxicillin 250 MG Oral Capsule", "Amoxicillin 250 mg capsule",
          "250 mg", "PO", "TID", "TAKE 1 CAPSULE BY MOUTH 3 TIMES DAILY FOR 10 DAYS", 30, 0,
          ("J02.0", "J02.9"), chronic=False),
    _drug(11, "308192", "amoxicillin 500 MG Oral Tablet", "Amoxicillin 500 mg tablet",
          "500 mg", "PO", "BID", "TAKE 1 TABLET BY MOUTH TWICE DAILY FOR 10 DAYS", 20, 0,
          ("J02.0", "J06.9"), chronic=False),
    _drug(12, "308460", "azithromycin 250 MG Oral Tablet", "Azithromycin 250 mg tablet",
          "250 mg", "PO", "QD", "TAKE 2 TABLETS ON DAY 1, THEN 1 TABLET DAILY FOR 4 DAYS", 6,
          0, ("J06.9", "J02.9"), chronic=False),
    _drug(13, "834102", "penicillin V potassium 500 MG Oral Tablet", "Penicillin VK 500 mg tab",
          "500 mg", "PO", "BID", "TAKE 1 TABLET BY MOUTH TWICE DAILY FOR 10 DAYS", 20, 0,
          ("J02.0",), chronic=False),
    _drug(14, "311995", "nitrofurantoin macrocrystals 50 MG Oral Capsule",
          "Nitrofurantoin 50 mg capsule", "50 mg", "PO", "QID",
          "TAKE 1 CAPSULE BY MOUTH 4 TIMES DAILY FOR 7 DAYS", 28, 0, ("N39.0",), chronic=False),
    _drug(15, "310385", "fluoxetine 20 MG Oral Capsule", "Fluoxetine 20 mg capsule", "20 mg",
          "PO", "QAM", "TAKE 1 CAPSULE BY MOUTH EVERY MORNING", 30, 5, ("F32.9", "F41.1")),
    _drug(16, "312938", "sertraline 100 MG Oral Tablet", "Sertraline 100 mg tablet",
          "100 mg", "PO", "QD", "TAKE 1 TABLET BY MOUTH ONCE DAILY", 30, 5,
          ("F32.9", "F41.1")),
    _drug(17, "309362", "clopidogrel 75 MG Oral Tablet", "Clopidogrel 75 mg tablet", "75 mg",
          "PO", "QD", "TAKE 1 TABLET BY MOUTH ONCE DAILY", 30, 11, ("I25.10",)),
    _drug(18, "855332", "warfarin sodium 5 MG Oral Tablet", "Warfarin 5 mg tablet", "5 mg",
          "PO", "QPM", "TAKE 1 TABLET BY MOUTH EVERY EVENING OR AS DIRECTED", 30, 2,
          ("I48.91",)),
    _drug(19, "313988", "furosemide 40 MG Oral Tablet", "Furosemide 40 mg tablet", "40 mg",
          "PO", "QAM", "TAKE 1 TABLET BY MOUTH EVERY MORNING", 30, 5, ("I50.9", "N18.9")),
    _drug(20, "312615", "prednisone 20 MG Oral Tablet", "Prednisone 20 mg tablet", "20 mg",
          "PO", "QD", "TAKE 2 TABLETS BY MOUTH DAILY FOR 5 DAYS", 10, 0,
          ("J45.909", "J44.9"), chronic=False),
    _drug(21, "895994",
          "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
          "Fluticasone HFA 44 mcg inhaler", "2 puffs", "INH", "BID",
          "INHALE 2 PUFFS BY MOUTH TWICE DAILY. RINSE MOUTH AFTER USE", 1, 5,
          ("J45.909", "J44.9")),
    _drug(22, "198014", "naproxen 500 MG Oral Tablet", "Naproxen 500 mg tablet", "500 mg",
          "PO", "BID PRN", "TAKE 1 TABLET BY MOUTH TWICE DAILY AS NEEDED FOR PAIN", 60, 2,
          ("M54.50", "M17.11", "M10.9")),
    _drug(23, "310965", "ibuprofen 200 MG Oral Tablet", "Ibuprofen 200 mg tablet", "400 mg",
          "PO", "Q6H PRN", "TAKE 2 TABLETS BY MOUTH EVERY 6 HOURS AS NEEDED FOR PAIN", 60, 1,
          ("M54.50", "G43.909"), chronic=False),
    _drug(24, "198440", "acetaminophen 500 MG Oral Tablet", "Acetaminophen 500 mg tablet",
          "1000 mg", "PO", "Q6H PRN", "TAKE 2 TABLETS BY MOUTH EVERY 6 HOURS AS NEEDED", 100,
          1, ("M17.11", "G43.909", "M54.50")),
    _drug(25, "1014678", "cetirizine hydrochloride 10 MG Oral Tablet",
          "Cetirizine 10 mg tablet", "10 mg", "PO", "QD", "TAKE 1 TABLET BY MOUTH ONCE DAILY",
          30, 5, ("J30.9",)),
    _drug(26, "311372", "loratadine 10 MG Oral Tablet", "Loratadine 10 mg tablet", "10 mg",
          "PO", "QD", "TAKE 1 TABLET BY MOUTH ONCE DAILY", 30, 5, ("J30.9",)),
    _drug(27, "197319", "allopurinol 100 MG Oral Tablet", "Allopurinol 100 mg tablet",
          "100 mg", "PO", "QD", "TAKE 1 TABLET BY MOUTH ONCE DAILY", 30, 5, ("M10.9",)),
    _drug(28, "904419", "alendronic acid 10 MG Oral Tablet", "Alendronate 10 mg tablet",
          "10 mg", "PO", "QAM", "TAKE 1 TABLET BY MOUTH EVERY MORNING WITH A FULL GLASS OF "
          "WATER", 30, 5, ("M81.0",)),
    _drug(29, "243670", "aspirin 81 MG Oral Tablet", "Aspirin 81 mg tablet", "81 mg", "PO",
          "QD", "TAKE 1 TABLET BY MOUTH ONCE DAILY", 90, 3, ("I25.10", "E11.9")),
    _drug(30, "310273", "famotidine 20 MG Oral Tablet", "Famotidine 20 mg tablet", "20 mg",
          "PO", "BID", "TAKE 1 TABLET BY MOUTH TWICE DAILY", 60, 5, ("K21.9",)),
)  # fmt: skip

DRUGS_BY_RX_CODE: dict[str, Drug] = {d.rx_code: d for d in DRUGS}


class Allergen(NamedTuple):
    """An EHR allergen code and the reactions it is charted with."""

    code: str
    substance: str
    standard: str  # the intended standard code where verified; "" = left to the mapping
    weight: int
    reactions: tuple[str, ...]


ALLERGENS: tuple[Allergen, ...] = (
    Allergen("ALG-PCN", "Penicillin", "RxNorm 70618 (penicillin)", 30,
             ("Hives", "Rash", "Anaphylaxis", "Itching")),
    Allergen("ALG-SULFA", "Sulfonamide antibiotics", "RxNorm 10180 (sulfamethoxazole)", 14,
             ("Rash", "Hives", "Fever")),
    Allergen("ALG-CEPH", "Cephalosporins", "RxNorm 2231 (cephalexin)", 5,
             ("Rash", "Hives")),
    Allergen("ALG-ASA", "Aspirin", "RxNorm 1191 (aspirin)", 6,
             ("Wheezing", "Hives", "Stomach upset")),
    Allergen("ALG-NSAID", "Ibuprofen", "RxNorm 5640 (ibuprofen)", 6,
             ("Swelling", "Hives", "Stomach upset")),
    Allergen("ALG-CODEINE", "Codeine", "RxNorm 2670 (codeine)", 6,
             ("Nausea", "Vomiting", "Itching")),
    Allergen("ALG-MORPH", "Morphine", "RxNorm 7052 (morphine)", 3,
             ("Nausea", "Itching", "Confusion")),
    Allergen("ALG-LISIN", "Lisinopril", "RxNorm 29046 (lisinopril)", 3,
             ("Cough", "Swelling of lips and tongue")),
    Allergen("ALG-PNUT", "Peanut", "SNOMED CT 762952008 (Peanut (substance))", 8,
             ("Anaphylaxis", "Hives", "Swelling")),
    Allergen("ALG-SHELL", "Shellfish", "", 6,
             ("Hives", "Swelling", "Anaphylaxis")),
    Allergen("ALG-EGG", "Egg", "", 3, ("Rash", "Vomiting")),
    Allergen("ALG-LATEX", "Latex", "", 5,
             ("Contact dermatitis", "Hives", "Wheezing")),
    Allergen("ALG-BEE", "Bee venom", "", 4,
             ("Swelling", "Anaphylaxis")),
    Allergen("ALG-IODINE", "Iodinated contrast media", "",
             4, ("Hives", "Flushing", "Shortness of breath")),
)  # fmt: skip

# (specialty, how many providers practise it); sums to the 25 providers.
SPECIALTIES: tuple[tuple[str, int], ...] = (
    ("Family Medicine", 6),
    ("Internal Medicine", 5),
    ("Pediatrics", 3),
    ("Cardiology", 2),
    ("Endocrinology", 2),
    ("Obstetrics and Gynecology", 2),
    ("Dermatology", 1),
    ("Orthopedic Surgery", 1),
    ("Psychiatry", 1),
    ("Neurology", 1),
    ("Pulmonology", 1),
)
